"""In-process integration rig: OctoPrint's real `Printer` and `MachineCom` against its real `VirtualPrinter`.

Follows notes/octoprint-1.11-internals.md §6 ("Standalone use without a server"), one step further up:
the rig builds OctoPrint's own `Printer` over a real `FileManager` (local storage in the basedir's
uploads folder, gcode analysis off) and connects it to the virtual printer, so the events, the job
scripts and the job data are OctoPrint's. `rig.port()` is the plugin's real adapter (`OctoPrintPort`)
over what OctoPrint injects into the plugin. OctoPrint's settings, plugin manager and event manager are
process-wide singletons, so there is ONE `Rig` per process (`Rig.instance()`); tests share it and swap
hooks through `rig.hooks` (read at call time, so no reconnect is needed), while `connect()` has the
Printer make a fresh `MachineCom` + `VirtualPrinter` when needed.

Ground truth is taken at the virtual printer's `write`: every line that reached the firmware, in
order, with `N<n> ` and `*checksum` stripped and resent line numbers counted once. Each line carries
the tags OctoPrint had for it (taken in the `sending` phase right before the write and confirmed in the
`sent` phase right after it, both on the sending thread); out-of-band writes (emergency M108) have
`tags=None`. State changes are recorded as MachineCom makes them (on its threads); events as a plugin
gets them, on OctoPrint's event-bus thread. Moves, heat-ups and dwells are instant by default
(`connect(speed=...)` to slow them): a corpus file of 7.6k lines streams in ~1.5 s, the 80k-line ones
in ~20 s.

    rig = Rig.instance()
    rig.connect()
    rig.hooks["queuing"] = my_hook              # hook(comm, phase, cmd, cmd_type, gcode, subcode=, tags=)
    rig.print_file(CORPUS_GCODE / "09_...gcode", profile="corpus_210x210x205")
    assert rig.wait_done(60) == "PrintDone"
    report = check_file_lines(rig.records(), path)
    assert report.ok, report
"""

from __future__ import annotations

import contextlib
import copy
import filecmp
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import octoprint.plugin
import octoprint.settings
from octoprint import octoprint_plugin_inject_factory
from octoprint.events import Events, eventManager
from octoprint.filemanager import FileDestinations, FileManager
from octoprint.filemanager.analysis import AnalysisQueue, GcodeAnalysisQueue
from octoprint.filemanager.storage import LocalFileStorage
from octoprint.filemanager.util import DiskFileWrapper
from octoprint.plugins.virtual_printer import VirtualPrinterPlugin
from octoprint.plugins.virtual_printer.virtual import VirtualPrinter
from octoprint.printer.profile import PrinterProfileManager
from octoprint.printer.standard import Printer
from octoprint.util import comm as comm_module
from octoprint.util import dict_merge
from octoprint.util.comm import MachineCom, PrintingGcodeFileInformation

from octoprint_safepause.adapter.octoprint_port import OctoPrintPort, state_from_id
from octoprint_safepause.core.port import JobInfo

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import corpus  # noqa: E402  (scripts/ is not a package; the corpus, its flavours and printer profiles)
import sandbox  # noqa: E402  (the offline config)

CORPUS_GCODE = corpus.gcode_dir()

log = logging.getLogger("safepause.rig")

# Hook names the rig registers once per MachineCom; each delegates to rig.hooks[<key>] at call time.
HOOK_NAMES = {
    "queuing": "octoprint.comm.protocol.gcode.queuing",
    "queued": "octoprint.comm.protocol.gcode.queued",
    "sending": "octoprint.comm.protocol.gcode.sending",
    "sent": "octoprint.comm.protocol.gcode.sent",
    "received": "octoprint.comm.protocol.gcode.received",
    "scripts": "octoprint.comm.protocol.scripts",
    "atcommand_queuing": "octoprint.comm.protocol.atcommand.queuing",
}
PLUGIN_ID = "safepause"  # hooks are registered under our id, so rewrites get the tag "plugin:safepause"

# Events the rig records from OctoPrint's event bus (all fired by `Printer`).
PRINT_EVENTS = (
    Events.PRINT_STARTED,
    Events.PRINT_DONE,
    Events.PRINT_FAILED,
    Events.PRINT_CANCELLING,
    Events.PRINT_CANCELLED,
    Events.PRINT_PAUSED,
    Events.PRINT_RESUMED,
    Events.PRINTER_STATE_CHANGED,
    Events.CONNECTED,
    Events.DISCONNECTED,
    Events.ERROR,
)
TERMINAL_EVENTS = (Events.PRINT_DONE, Events.PRINT_CANCELLED, Events.PRINT_FAILED)
FLUSH_EVENT = "SafePauseRigFlush"  # the rig's own, fired to see every event fired before it delivered

# MachineCom's state constants by id ("PRINTING", ...): `on_comm_state_change` gets the constant
STATE_IDS = {
    getattr(MachineCom, name): name[len("STATE_") :] for name in dir(MachineCom) if name.startswith("STATE_")
}

_NUMBERED = re.compile(r"^N(-?\d+)\s+(.*?)\*\d+$")
_M110 = re.compile(r"^M110(?:\s+N(-?\d+))?", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# ground truth


@dataclass
class Received:
    """One line the virtual printer got, once (resends are folded into the first transmission)."""

    cmd: str  # without line number and checksum
    n: int | None  # line number it was sent with, None if unnumbered
    tags: frozenset | None = None  # tags from the `sent` phase; None for out-of-band writes
    resends: int = 0  # how many times it was resent

    def tag_value(self, prefix: str) -> str | None:
        for tag in self.tags or ():
            if tag.startswith(prefix):
                return tag[len(prefix) :]
        return None

    @property
    def fileline(self) -> int | None:
        value = self.tag_value("fileline:") if self.tags and "source:file" in self.tags else None
        return int(value) if value is not None else None


class Capture:
    """Reassembles the byte stream written to the firmware into lines; folds resends by line number."""

    def __init__(self):
        self._lock = threading.Lock()
        self._buffer = b""
        self._records: list[Received] = []
        self._by_n: dict[int, Received] = {}
        self._last_n: int | None = None
        self._raw: list[str] = []
        self._local = threading.local()  # the record the current thread wrote last (for the sent hook)

    def clear(self):
        with self._lock:
            self._records = []
            self._raw = []
            # keep _by_n/_last_n: a resend after clear() must still be recognised as one

    def expect(self, tags) -> None:
        """Called from the `sending` phase, on the sending thread right before the write: the line about
        to be written gets these tags at once (the `sent` phase confirms them after the write)."""
        self._local.pending = frozenset(tags) if tags is not None else None

    def feed(self, data: bytes):
        with self._lock:
            self._buffer += data
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                # resends skip the sending phase: whatever is pending belongs to no other line
                pending, self._local.pending = getattr(self._local, "pending", None), None
                self._local.last = self._line(line.decode("ascii", errors="replace").strip(), pending)

    def _line(self, text: str, tags) -> Received | None:
        self._raw.append(text)
        match = _NUMBERED.match(text)
        if not match:
            record = Received(text, None, tags)
            self._records.append(record)
            return record
        n, cmd = int(match.group(1)), match.group(2).strip()
        m110 = _M110.match(cmd)
        if m110:
            # the printer's line counter restarts here; earlier numbers are no longer resends
            self._by_n.clear()
            self._last_n = int(m110.group(1) or 0)
        elif self._last_n is not None and n <= self._last_n and n in self._by_n:
            self._by_n[n].resends += 1
            return None
        else:
            self._last_n = n
        record = Received(cmd, n, tags)
        self._by_n[n] = record
        self._records.append(record)
        return record

    def tag_last(self, cmd: str, tags) -> None:
        """Called from the `sent` phase (same thread as the write, right after it): the final tags, after
        any `sending`-phase rewrite."""
        record = getattr(self._local, "last", None)
        self._local.last = None
        if record is not None and tags is not None and record.cmd == cmd.strip():
            record.tags = frozenset(tags)

    def records(self) -> list[Received]:
        with self._lock:
            return list(self._records)

    def raw(self) -> list[str]:
        with self._lock:
            return list(self._raw)


@dataclass
class FileLineReport:
    """Result of `check_file_lines`: what went wrong with the file lines, with enough context to debug."""

    expected: int
    delivered: int
    missing: list = field(default_factory=list)  # filelines never delivered
    duplicates: list = field(default_factory=list)  # (fileline, count)
    reorders: list = field(default_factory=list)  # (previous fileline, fileline) where order went back
    mismatches: list = field(default_factory=list)  # (fileline, expected text, delivered text)
    rewritten: list = field(default_factory=list)  # filelines sent rewritten/expanded by a hook (info)
    suppressed_by_octoprint: list = field(default_factory=list)  # filelines OctoPrint itself blocks

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.reorders or self.mismatches)

    def __str__(self):
        def head(items, k=10):
            return f"{items[:k]}{f' ...(+{len(items) - k})' if len(items) > k else ''}"

        status = "OK" if self.ok else "FAILED"
        return (
            f"file lines {status}: expected {self.expected}, delivered {self.delivered}; "
            f"missing={head(self.missing)} duplicates={head(self.duplicates)} "
            f"reorders={head(self.reorders)} mismatches={head(self.mismatches, 3)}"
        )


def file_lines(path) -> list[str]:
    """The file as OctoPrint's reader yields it (comments stripped, blank lines dropped); index 0 is
    `fileline:1`. Uses OctoPrint's own `PrintingGcodeFileInformation` so the numbering is identical."""
    info = PrintingGcodeFileInformation(str(path))
    info.start()
    lines = []
    try:
        while True:
            line, _pos, lineno = info.getNext()
            if line is None:
                return lines
            assert lineno == len(lines) + 1
            lines.append(line)
    finally:
        info.close()


def octoprint_blocks(cmd: str) -> bool:
    """True for file lines OctoPrint itself suppresses (serial.blockedCommands/ignoredCommands)."""
    gcode = comm_module.gcode_command_for_cmd(cmd)
    try:
        s = octoprint.settings.settings()
        blocked = (s.get(["serial", "blockedCommands"]) or []) + (s.get(["serial", "ignoredCommands"]) or [])
    except ValueError:  # settings not initialised (no rig in this process): OctoPrint's defaults
        blocked = ["M0", "M1"]
    return gcode in blocked


def check_file_lines(
    records: Iterable[Received],
    path,
    complete: bool = True,
    suppressed: Callable[[str], bool] = octoprint_blocks,
) -> FileLineReport:
    """Every line of `path` reached the printer exactly once and in order.

    File lines are recognised by their tags (`source:file` + `fileline:<n>`), so injected lines (pause
    gcode, restore gcode) are ignored whatever their text, and a re-sent saved line (original tags + a
    marker) counts as the file line. Lines carrying a file line's tags with other text (a rewrite or an
    expansion by a hook) stand for that line only if tagged `source:rewrite` and no exact copy was sent;
    otherwise they are mismatches. With `complete=False` (cancelled print) only the prefix up to the
    last delivered file line must be whole.
    """
    expected = file_lines(path)
    delivered = [r for r in records if r.fileline is not None]
    report = FileLineReport(expected=len(expected), delivered=len(delivered))
    exact: dict[int, list[int]] = {}  # fileline -> positions of copies with the file's text
    other: dict[int, list[int]] = {}  # fileline -> positions of entries with other text
    for position, record in enumerate(delivered):
        number = record.fileline
        text = expected[number - 1] if 0 < number <= len(expected) else None
        (exact if record.cmd == text else other).setdefault(number, []).append(position)
    for number, positions in other.items():
        if number in exact:
            report.rewritten.append(number)  # expansion around the line itself
        elif all("source:rewrite" in delivered[p].tags for p in positions):
            exact[number] = positions[:1]
            report.rewritten.append(number)
        else:
            text = expected[number - 1] if 0 < number <= len(expected) else None
            report.mismatches.extend((number, text, delivered[p].cmd) for p in positions)
    previous = 0
    for _position, number in sorted((positions[0], number) for number, positions in exact.items()):
        if number < previous:
            report.reorders.append((previous, number))
        previous = max(previous, number)
    report.duplicates = [(number, len(p)) for number, p in sorted(exact.items()) if len(p) > 1]
    last = len(expected) if complete else max(exact, default=0)
    for number in range(1, last + 1):
        if number not in exact:
            if suppressed(expected[number - 1]):
                report.suppressed_by_octoprint.append(number)
            else:
                report.missing.append(number)
    return report


# ---------------------------------------------------------------------------------------------------------
# the firmware


class _OverlaySettings:
    """The virtual printer's settings with per-connection overrides on top (it reads them once in __init__)."""

    def __init__(self, base, overrides):
        self._base = base
        self._overrides = overrides or {}

    def get(self, path, **kwargs):
        if path and path[0] in self._overrides:
            value = self._overrides[path[0]]
            base = self._base.get(path[:1], **kwargs)
            if isinstance(value, dict) and isinstance(base, dict):
                value = dict_merge(base, value)
            for key in path[1:]:
                value = value[key]
            return copy.deepcopy(value)
        return self._base.get(path, **kwargs)

    def get_int(self, path, **kwargs):
        value = self.get(path, **kwargs)
        return None if value is None else int(value)

    def get_float(self, path, **kwargs):
        value = self.get(path, **kwargs)
        return None if value is None else float(value)

    def get_boolean(self, path, **kwargs):
        value = self.get(path, **kwargs)
        if isinstance(value, str):
            return value.lower() in ("true", "yes", "y", "1")
        return bool(value)

    def __getattr__(self, name):
        return getattr(self._base, name)


class RigVirtualPrinter(VirtualPrinter):
    """OctoPrint's VirtualPrinter plus a write tap (ground truth) and a speed factor.

    `speed`: moves, heat-ups and dwells take 1/speed of the simulated time (None/0: instant). Done with
    properties over the feed/flow multipliers so a file's own M220/M221 still work, scaled.
    """

    def __init__(self, *args, capture: Capture, speed: float | None, **kwargs):
        self._capture = capture
        self._speed = speed
        self._feed = self._flow = 100.0
        super().__init__(*args, **kwargs)

    def _factor(self):
        # inf, not just huge: the move duration becomes exactly 0 and _performMove skips time.sleep(),
        # whose ~0.1-0.3 ms minimum would otherwise bound streaming at the planner buffer's pace
        return self._speed if self._speed else math.inf

    @property
    def _feedrate_multiplier(self):
        return self._feed * self._factor()

    @_feedrate_multiplier.setter
    def _feedrate_multiplier(self, value):
        self._feed = value

    @property
    def _flowrate_multiplier(self):
        return self._flow * self._factor()

    @_flowrate_multiplier.setter
    def _flowrate_multiplier(self, value):
        self._flow = value

    def _simulateTemps(self, delta=0.5):
        if self._speed is not None and self._speed <= 1:
            return super()._simulateTemps(delta=delta)
        # heat-up at 10 °C/s would make every M109 take ~20 s: jump to the targets instead
        for i in range(len(self.temp)):
            self.temp[i] = self.pinnedExtruders.get(i, self.targetTemp[i] or self._ambient_temperature)
        self.bedTemp = self.bedTargetTemp or self._ambient_temperature
        self.chamberTemp = self.chamberTargetTemp or self._ambient_temperature
        self.lastTempAt = time.monotonic()

    def _waitForHeatup(self, heater, only_wait_if_higher):
        if self._speed is None or self._speed > 1:
            self._simulateTemps()  # so the wait loop's first test already passes (no 1 s sleep)
        return super()._waitForHeatup(heater, only_wait_if_higher)

    def _gcode_G4(self, data):
        match = re.search(r"([PS])([0-9.]+)", data)
        seconds = 0.0
        if match:
            seconds = float(match.group(2)) / (1000.0 if match.group(1) == "P" else 1.0)
        time.sleep(seconds / self._factor())

    def close(self):
        outgoing = self.outgoing
        super().close()
        if outgoing is not None:
            outgoing.put("")  # wake the comm's readline now instead of after its read timeout (10 s)

    def write(self, data):
        written = super().write(data)
        if written:
            self._capture.feed(bytes(data[:written]))
        return written


# ---------------------------------------------------------------------------------------------------------
# OctoPrint's printer, tapped


class RigPrinter(Printer):
    """OctoPrint's `Printer` as it is (events, job scripts, job data), plus a tap: every state change is
    recorded (with its time) right as MachineCom makes it, on MachineCom's thread."""

    def __init__(self, rig: Rig, *args):
        self._rig = rig
        super().__init__(*args)

    def on_comm_state_change(self, state):
        super().on_comm_state_change(state)  # first: after a close, waiters must find the comm dropped
        self._rig._state_changed(STATE_IDS.get(state, "UNKNOWN"))


# ---------------------------------------------------------------------------------------------------------
# the rig


@dataclass
class StateChange:
    old: str  # MachineCom state ids, e.g. "PRINTING"
    new: str
    at: float


class Rig:
    _instance: Rig | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def instance(cls, basedir=None) -> Rig:
        """The process-wide rig (OctoPrint's singletons allow only one)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(basedir)
            return cls._instance

    def __init__(self, basedir=None, serial_log: bool = True):
        if octoprint.settings._instance is not None:
            raise RuntimeError("OctoPrint settings already initialised in this process; use Rig.instance()")
        t0 = time.monotonic()
        self._own_basedir = basedir is None
        self.basedir = Path(basedir or tempfile.mkdtemp(prefix="safepause-rig-"))
        self.basedir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sandbox.test_config_path(), self.basedir / "config.yaml")
        self.settings = octoprint.settings.settings(init=True, basedir=str(self.basedir))
        # an analysis of every file put into storage would compete with the print for the CPU
        self.settings.set(["gcodeAnalysis", "runAt"], "never")
        self.logs = self.basedir / "logs"
        self.logs.mkdir(exist_ok=True)
        self._setup_logging(serial_log)

        self.plugin_manager = octoprint.plugin.plugin_manager(
            init=True, plugin_folders=[], plugin_entry_points=[]
        )
        self.plugin_manager.get_hooks = self._get_hooks
        self.profiles = PrinterProfileManager()
        for profile in corpus.printer_profiles().values():  # one per machine of the corpus files
            self.profiles.save(profile, allow_overwrite=True)
        self._vp_settings = octoprint.plugin.plugin_settings(
            "virtual_printer", defaults=VirtualPrinterPlugin().get_settings_defaults()
        )
        self.events = eventManager()
        for name in PRINT_EVENTS:
            self.events.subscribe(name, self._on_event)
        self.events.subscribe(FLUSH_EVENT, self._on_flush)
        self.events.fire(Events.STARTUP)  # the bus holds every event back until Startup

        # OctoPrint's file storage and printer, built as its server builds them (no slicing)
        analysis_queue = AnalysisQueue({"gcode": GcodeAnalysisQueue})
        uploads = LocalFileStorage(self.settings.getBaseFolder("uploads"))
        self.file_manager = FileManager(
            analysis_queue, None, self.profiles, initial_storage_managers={FileDestinations.LOCAL: uploads}
        )
        self.file_manager.initialize()
        self.printer = RigPrinter(self, self.file_manager, analysis_queue, self.profiles)
        # what the plugin's initialize() hands OctoPrintPort: the printer as OctoPrint injects it into a
        # plugin (a proxy adding "source:plugin" and "plugin:safepause" to the tags), files, profiles
        injected = octoprint_plugin_inject_factory(self.settings, {"printer": self.printer})
        plugin_printer = injected(PLUGIN_ID, octoprint.plugin.OctoPrintPlugin())["printer"]
        self.port_args = (plugin_printer, self.file_manager, self.profiles)

        # swappable per test: rig.hooks["queuing"] = fn  (same signatures as OctoPrint's hooks)
        self.hooks: dict[str, Callable] = {}
        self.on_state_change: Callable[[str, str], None] | None = None  # port strings, event-bus thread
        self.on_print_event: Callable[[str, dict], None] | None = None  # event-bus thread

        self.capture = Capture()
        self._connection: MachineCom | None = None  # the last connection's comm, until reaped
        self.virtual_printer: RigVirtualPrinter | None = None
        self.speed: float | None = None
        self._virtual_overrides: dict = {}
        self._profile: str | None = None  # the profile to connect with (None: OctoPrint's default)
        self._cond = threading.Condition()
        self._state_id = "OFFLINE"
        self._state_changes: list[StateChange] = []
        self._events: list[tuple] = []  # (name, payload) in the bus's order
        self._bus_state = "offline"  # the last PrinterStateChanged's state (port string; it has no old one)
        self._flushes = 0  # FLUSH_EVENTs fired / delivered
        self._flushed = 0
        self.setup_seconds = time.monotonic() - t0

    # ----- plumbing

    def _setup_logging(self, serial_log):
        formatter = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
        handler = logging.FileHandler(self.logs / "octoprint.log")
        handler.setFormatter(formatter)
        handler.setLevel(logging.INFO)
        root = logging.getLogger("octoprint")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        serial_logger = logging.getLogger("SERIAL")
        serial_logger.propagate = False  # Send:/Recv: per line would flood pytest's log capture
        if serial_log:
            handler = logging.FileHandler(self.logs / "serial.log")
            handler.setFormatter(logging.Formatter("%(asctime)s - %(message)s"))
            serial_logger.addHandler(handler)
            serial_logger.setLevel(logging.DEBUG)
        else:
            serial_logger.setLevel(logging.CRITICAL)

    def _get_hooks(self, name):
        if name == "octoprint.comm.transport.serial.factory":
            return {"virtual_printer": self._serial_factory}
        for key, hook_name in HOOK_NAMES.items():
            if hook_name == name:
                return {PLUGIN_ID: self._delegator(key)}
        return {}

    def _delegator(self, key):
        if key == "sending":

            def sending(comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
                self.capture.expect(kwargs.get("tags"))
                hook = self.hooks.get("sending")
                return hook(comm, phase, cmd, cmd_type, gcode, *args, **kwargs) if hook else None

            return sending
        if key == "sent":

            def sent(comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
                self.capture.tag_last(cmd, kwargs.get("tags"))
                hook = self.hooks.get("sent")
                return hook(comm, phase, cmd, cmd_type, gcode, *args, **kwargs) if hook else None

            return sent
        if key == "received":

            def received(comm, line, *args, **kwargs):
                hook = self.hooks.get("received")
                return hook(comm, line, *args, **kwargs) if hook else line

            return received

        def delegate(*args, **kwargs):
            hook = self.hooks.get(key)
            return hook(*args, **kwargs) if hook else None

        return delegate

    def _serial_factory(self, comm_instance, port, baudrate, read_timeout):
        if port != "VIRTUAL":
            return None
        data_folder = self.basedir / "data" / "virtual_printer"
        data_folder.mkdir(parents=True, exist_ok=True)
        self.virtual_printer = RigVirtualPrinter(
            _OverlaySettings(self._vp_settings, self._virtual_overrides),
            self.profiles,
            data_folder=str(data_folder),
            read_timeout=float(read_timeout),
            faked_baudrate=baudrate,
            capture=self.capture,
            speed=self.speed,
        )
        return self.virtual_printer

    def _virtual_setting(self, path):
        return _OverlaySettings(self._vp_settings, self._virtual_overrides).get(path)

    def _state_changed(self, new: str):
        with self._cond:
            old, self._state_id = self._state_id, new
            self._state_changes.append(StateChange(old, new, time.monotonic()))
            self._cond.notify_all()

    def _on_event(self, name, payload):
        # OctoPrint's event-bus thread, like a plugin's on_event: record, then hand on
        with self._cond:
            self._events.append((name, payload))
            self._cond.notify_all()
        try:
            if name == Events.PRINTER_STATE_CHANGED:
                old, self._bus_state = self._bus_state, state_from_id(payload["state_id"])
                if self.on_state_change:
                    self.on_state_change(old, self._bus_state)
            elif self.on_print_event:
                self.on_print_event(name, payload)
        except Exception:
            log.exception("rig event handler failed for %s", name)

    def _on_flush(self, _name, flush):
        with self._cond:
            self._flushed = flush
            self._cond.notify_all()

    def _settle(self, timeout: float = 10.0):
        """Let every event of what happened so far arrive (before a new print's events are counted).
        Printer fires PrintFailed after a cancel or an error, and logs a print's end, from short threads
        of its own (targets `finalize`, `log_print`): join those, then send a marker through the bus."""
        for thread in threading.enumerate():
            if thread.name.endswith(("(finalize)", "(log_print)")):
                thread.join(timeout)
        with self._cond:
            self._flushes += 1
            flush = self._flushes
        self.events.fire(FLUSH_EVENT, flush)
        with self._cond:
            if not self._cond.wait_for(lambda: self._flushed >= flush, timeout):
                raise TimeoutError(f"the event bus did not deliver within {timeout}s")

    # ----- connection

    @property
    def comm(self) -> MachineCom | None:
        """The Printer's MachineCom; None without a connection (Printer drops it when it closes)."""
        return self.printer._comm

    def connect(self, timeout: float = 15.0, speed: float | None = None, virtual: dict | None = None):
        """Connect as OctoPrint does (`printer.connect` with the profile of `use_profile`, at first
        OctoPrint's default: a fresh MachineCom + VirtualPrinter) and wait for Operational. `speed`: see
        RigVirtualPrinter (None: instant moves). `virtual`: overrides of the virtual printer's settings,
        e.g. {"numExtruders": 2}. Reconnects if already connected with other parameters."""
        virtual = virtual or {}
        unchanged = virtual == self._virtual_overrides and speed == self.speed
        if unchanged and self.comm is not None and self.state_id() == "OPERATIONAL":
            return self
        self.disconnect()
        self.speed, self._virtual_overrides = speed, virtual
        with self._cond:
            self._state_id = "OFFLINE"
        self.printer.connect(port="VIRTUAL", baudrate=115200, profile=self._profile)
        comm = self._connection = self.comm
        self.wait_state("operational", timeout=timeout)
        # let the on-connect burst (M110, M115, M155) finish so it does not mix into the next capture
        self.wait_for(
            lambda: (
                comm._firmware_info_received
                and not comm._send_queue.unfinished_tasks
                and not comm._command_queue.unfinished_tasks
            ),
            timeout=timeout,
        )
        return self

    def disconnect(self, timeout: float = 10.0):
        comm, self._connection = self._connection, None
        if comm is None:
            return
        # Not printer.disconnect(): its close(wait=True) waits up to 10 s for queues that a test may have
        # left stuck. -> CLOSED: Printer drops its comm (a no-op if it closed itself on an error).
        comm.close(wait=False)
        # The send loop would wait for an "ok" forever (a daemon-thread leak in OctoPrint too). Set the
        # inner Event: close() leaves the CountedEvent's mutex acquired by whichever thread closed.
        comm._clear_to_send._event.set()
        for thread in (comm.monitoring_thread, comm.sending_thread):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)
        self.virtual_printer = None

    def shutdown(self):
        self.disconnect()
        self.events.fire(Events.SHUTDOWN)
        logging.getLogger("octoprint").handlers.clear()
        logging.getLogger("SERIAL").handlers.clear()
        if self._own_basedir and not os.environ.get("KEEP"):
            shutil.rmtree(self.basedir, ignore_errors=True)

    # ----- state

    def state_id(self) -> str:
        """MachineCom's state id as Printer reports it, e.g. "PRINTING"; "OFFLINE" without a connection."""
        return self.printer.get_state_id()

    def state(self) -> str:
        return state_from_id(self.state_id())

    def state_changes(self) -> list[StateChange]:
        with self._cond:
            return list(self._state_changes)

    def fired(self, name: str | None = None) -> list:
        """Events so far, as a plugin gets them: on the event bus, a moment after they were fired (wait for
        one with wait_event / wait_done)."""
        with self._cond:
            return [e for e in self._events if name is None or e[0] == name]

    def wait_state(self, *states: str, timeout: float = 10.0) -> str:
        """Wait until the comm state is one of `states` (port strings like "printing" or ids like "PAUSED")."""

        def match():
            sid = self.state_id()
            return sid in states or state_from_id(sid) in states

        with self._cond:
            if not self._cond.wait_for(match, timeout):
                raise TimeoutError(
                    f"state {self.state_id()} not in {states} after {timeout}s; {self.diagnose()}"
                )
        return self.state_id()

    def wait_event(self, name: str, timeout: float = 10.0, since: int = 0) -> dict:
        """Wait until event `name` has arrived (counting from index `since` in `fired()`)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(e[0] == name for e in self._events[since:]), timeout)
            if not ok:
                raise TimeoutError(f"no {name} after {timeout}s; {self.diagnose()}")
            return next(e[1] for e in self._events[since:] if e[0] == name)

    def wait_done(self, timeout: float = 60.0) -> str:
        """Wait until the current print ends and the printer is operational again. Returns the first
        terminal event of the job: "PrintDone", "PrintCancelled" or "PrintFailed".

        `timeout` is how long the print may stand still: while the file position moves the wait goes on
        (a loaded machine prints slower, a stalled print is what the tests look for), up to ten times
        `timeout` in all."""

        def finished():
            ended = any(e[0] in TERMINAL_EVENTS for e in self._events)
            return ended and self.state_id() in ("OPERATIONAL", "OFFLINE", "ERROR")

        def position():
            comm = self.comm
            return comm.getFilePosition() if comm else None

        give_up = time.monotonic() + 10 * timeout
        stalled_at = time.monotonic() + timeout
        last = position()
        with self._cond:
            while not self._cond.wait_for(finished, min(1.0, timeout)):
                now = time.monotonic()
                current = position()
                if current != last:
                    last, stalled_at = current, now + timeout
                if now > stalled_at or now > give_up:
                    raise TimeoutError(f"print not finished after {timeout}s; {self.diagnose()}")
            return next(e[0] for e in self._events if e[0] in TERMINAL_EVENTS)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005):
        """Poll `predicate` (for conditions the rig has no event for, e.g. a line count)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s; {self.diagnose()}")
            time.sleep(interval)

    def diagnose(self) -> str:
        comm = self.comm
        pos = comm.getFilePosition() if comm else None
        hold = comm._job_on_hold.counter if comm else None
        last = [r.cmd for r in self.capture.records()[-5:]]
        log_lines = list(self.printer._log)[-5:]  # Printer keeps the terminal's last lines
        return f"state={self.state_id()} filepos={pos} hold={hold} last_sent={last} log={log_lines}"

    # ----- printing

    def use_profile(self, profile) -> dict:
        """Select a printer profile: an id saved before, or a dict (saved first; see `make_profile`).
        OctoPrint selects it at connect; the rig selects it on the live connection (MachineCom reads the
        profile when it needs it), so that what a test set up on the virtual printer stays, and connects
        with it from then on. Reconnects only for another extruder count: OctoPrint refuses T<n> beyond
        the profile's, the virtual printer beyond its own."""
        if isinstance(profile, dict):
            profile = self.profiles.save(copy.deepcopy(profile), allow_overwrite=True)["id"]
        if not self.profiles.select(profile):
            raise ValueError(f"unknown printer profile {profile!r}")
        self._profile = profile
        tools = self.profiles.get_current_or_default()["extruder"]["count"]
        if tools != self._virtual_setting(["numExtruders"]):
            self.connect(speed=self.speed, virtual=dict(self._virtual_overrides, numExtruders=tools))
        return self.profiles.get_current_or_default()

    def print_file(self, path, profile=None) -> JobInfo:
        """Print a local file as OctoPrint does: put into its local storage (the uploads folder; an
        identical copy already there is reused), printer.select_file + printer.start_print. `profile`:
        see `use_profile`, default: the corpus profile matching the file's name, else the current one.
        Returns the job as OctoPrint's storage has it (its disk_path is the copy in uploads)."""
        path = Path(path).resolve()
        if profile is None:
            profile = corpus.profile_id_for(path.name)
        if profile is not None:
            self.use_profile(profile)
        if self.state_id() != "OPERATIONAL":
            raise RuntimeError(f"cannot print in state {self.state_id()}")
        storage_path = self._upload(path)
        self._new_job()
        tags = {"trigger:rig.print_file"}
        self.printer.select_file(storage_path, False, printAfterSelect=False, tags=tags)
        self.printer.start_print(tags=tags)
        if self.state_id() == "OPERATIONAL":
            raise RuntimeError(f"OctoPrint did not start printing {storage_path}; {self.diagnose()}")
        files, local = self.file_manager, FileDestinations.LOCAL
        disk_path, name = files.path_on_disk(local, storage_path), files.split_path(local, storage_path)[1]
        return JobInfo(local, storage_path, disk_path, name, path.stat().st_size)

    def _upload(self, path: Path) -> str:
        """`path` in OctoPrint's local storage, under its own name; returns the storage path."""
        files, local = self.file_manager, FileDestinations.LOCAL
        name = files.sanitize_name(local, path.name)
        there = files.path_on_disk(local, name) if files.file_exists(local, name) else None
        if there and filecmp.cmp(there, path, shallow=False):
            return name  # an identical copy is there already
        upload = DiskFileWrapper(path.name, str(path), move=False)
        return files.add_file(local, name, upload, allow_overwrite=True)

    def print_sd(self, path, timeout: float = 10.0) -> JobInfo:
        """Print `path` from the virtual printer's SD card (copied onto it) as OctoPrint does:
        printer.select_file(sd=True), then, once the printer has opened the file, printer.start_print.
        The port's job() says "sdcard"."""
        path = Path(path)
        name = path.name.lower()
        sd_folder = Path(self.settings.getBaseFolder("virtualSd"))
        sd_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, sd_folder / name)
        self._new_job()
        tags = {"trigger:rig.print_sd"}
        self.printer.select_file(name, True, printAfterSelect=False, tags=tags)

        def selected():
            file = (self.printer.get_current_job() or {}).get("file") or {}
            return (file.get("origin"), file.get("path")) == (FileDestinations.SDCARD, name)

        self.wait_for(selected, timeout=timeout)
        self.printer.start_print(tags=tags)
        return JobInfo(FileDestinations.SDCARD, name, None, name, path.stat().st_size)

    def _new_job(self):
        """The previous job's events all in, then a fresh capture for the new one."""
        self._settle()
        self.clear()

    def cancel(self, tags: Iterable[str] = ()):
        self.printer.cancel_print(tags=set(tags) | {"trigger:rig.cancel"})

    def clear(self):
        """Forget captured lines and recorded events/state changes."""
        self.capture.clear()
        with self._cond:
            self._events.clear()
            self._state_changes.clear()

    def send(self, *lines: str, tags: Iterable[str] = ()):
        """Send commands like the terminal would (command queue while printing, direct while held)."""
        for line in lines:
            self.comm.sendCommand(line, tags=set(tags) | {"source:rig"})

    def debug(self, command: str):
        """Virtual printer debug command, e.g. rig.debug("sleep_after_next M109 5") or "drop_connection"."""
        self.send(f"!!DEBUG:{command}")

    def fake_ok(self):
        """OctoPrint's "Fake Acknowledgement"."""
        self.printer.fake_ack()

    def continue_after_m600(self, timeout: float = 30.0):
        """The virtual printer answers M600 (file 11) with //action:paused and never sends its "ok":
        wait for OctoPrint's Paused state, acknowledge by hand and resume."""
        self.wait_state("PAUSED", timeout=timeout)
        self.fake_ok()
        self.printer.resume_print(tags={"trigger:rig.continue_after_m600"})

    def hold_count(self) -> int | None:
        comm = self.comm
        return comm._job_on_hold.counter if comm else None

    # ----- ground truth

    def records(self) -> list[Received]:
        return self.capture.records()

    def received(self) -> list[str]:
        """Every line the printer received since the last clear(), once each, in order."""
        return [r.cmd for r in self.capture.records()]

    def raw(self) -> list[str]:
        """Every line as written, with line numbers, checksums and resends."""
        return self.capture.raw()

    def port(self) -> OctoPrintPort:
        """The plugin's real printer port, built as the plugin builds it (the user's scripts included)."""
        return OctoPrintPort(*self.port_args, load_script=self.load_script)

    def load_script(self, name: str) -> str | None:
        return self.settings.loadScript("gcode", name, source=True)

    def save_script(self, name: str, text: str) -> None:
        """One of the user's OctoPrint G-code scripts, e.g. "afterPrintPaused" (as its settings dialog)."""
        self.settings.saveScript("gcode", name, text)

    def plugin_printer(self, identifier: str):
        """The printer as OctoPrint injects it into plugin `identifier`: its calls carry that plugin's tags."""
        injected = octoprint_plugin_inject_factory(self.settings, {"printer": self.printer})
        return injected(identifier, octoprint.plugin.OctoPrintPlugin())["printer"]

    # ----- per-test reset

    def reset(self, timeout: float = 15.0):
        """Between tests: drop hooks and callbacks, end any print, release leaked holds, deselect the
        file (it stays selected after a print, as in OctoPrint), let pending events in, clear captures."""
        self.hooks.clear()
        self.on_state_change = None
        self.on_print_event = None
        comm = self.comm
        if comm is not None and comm.isOperational():
            with contextlib.suppress(Exception):
                while comm._job_on_hold.counter > 0:
                    comm.set_job_on_hold(False)
                if comm.isBusy():
                    self.printer.cancel_print(tags={"trigger:rig.reset"})
            try:
                self.wait_state("operational", timeout=timeout)
                self.printer.unselect_file()
            except TimeoutError:
                self.disconnect()
        else:
            self.disconnect()
        self._settle()
        self.clear()


def make_profile(identifier: str, width: float, depth: float, height: float, **overrides) -> dict:
    """A full printer profile: OctoPrint's defaults, the build volume, then `overrides` (deep-merged),
    e.g. make_profile("tiny", 120, 120, 60, extruder={"count": 2})."""
    profile = dict_merge(
        PrinterProfileManager.default,
        {"id": identifier, "name": identifier, "volume": {"width": width, "depth": depth, "height": height}},
    )
    return dict_merge(profile, overrides)


# ---------------------------------------------------------------------------------------------------------
# a real PauseController wired to the rig (like the plugin's initialize(); for the controller tests)

def flavour_for_gcode(filename: str) -> str:
    """The firmware flavour of a corpus file (scripts/corpus.py)."""
    return corpus.flavour_for(filename)


def plugin_settings(**overrides) -> dict:
    """Raw settings as the plugin's _raw_settings() returns them: the motion defaults, the plugin's own
    keys, then `overrides`."""
    from octoprint_safepause.core import settings_schema

    values = dict(settings_schema.defaults(), firmware="auto", hold_timeout=2.0)
    values.update(overrides)
    return values


class LogTrap(logging.Handler):
    """Collects every log record with a traceback (from any logger) while installed on the root logger;
    `ours()` are the ones whose traceback runs through octoprint_safepause."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.messages: list[str] = []  # "<level> <name>: <message>" of every warning or worse

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        if record.exc_info:
            self.records.append(record)

    def ours(self) -> list[str]:
        import traceback

        found = []
        for record in self.records:
            text = "".join(traceback.format_exception(*record.exc_info))
            if "octoprint_safepause" in text:
                found.append(f"{record.name}: {record.getMessage()}\n{text}")
        return found

    def __enter__(self):
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)


@dataclass
class WiredController:
    """`wire_controller`'s result: the controller, its port, what it emitted, and the live settings."""

    controller: object
    port: OctoPrintPort
    settings: dict
    events: list = field(default_factory=list)  # (name, payload, monotonic time) from emit()
    flavour: str = "marlin"

    def emitted(self, *names) -> list:
        return [e for e in list(self.events) if not names or e[0] in names]


def wire_controller(
    rig: Rig, port: OctoPrintPort | None = None, hold_timeout: float = 1.0, flavour="marlin", **settings
) -> WiredController:
    """A real PauseController on the rig, as the plugin wires it: bind(port, emit, settings, flavour),
    start(), the queuing hook and the event callback. `settings`: overrides of `plugin_settings()`; the
    returned `.settings` dict is read at every pause, so a test may change it between pauses. Stop it
    with `unwire_controller`."""
    from octoprint_safepause.core.controller import PauseController

    port = port or rig.port()
    wired = WiredController(None, port, plugin_settings(**settings), flavour=flavour)
    controller = PauseController(port=None, hold_timeout=hold_timeout)
    controller.bind(
        port,
        emit=lambda name, payload: wired.events.append((name, payload, time.monotonic())),
        settings=lambda: dict(wired.settings),
        flavour=lambda: wired.flavour,
        logger=logging.getLogger("octoprint.plugins.safepause"),
    )
    controller.start()
    wired.controller = controller
    rig.hooks["queuing"] = controller.on_queuing
    rig.on_print_event = controller.on_printer_event
    return wired


def unwire_controller(rig: Rig, wired: WiredController | None, timeout: float = 5.0) -> None:
    if wired is None:
        return
    if rig.hooks.get("queuing") == wired.controller.on_queuing:
        rig.hooks.pop("queuing", None)
    rig.on_print_event = None
    wired.controller.stop(timeout)


# ---------------------------------------------------------------------------------------------------------
# wire checks and file excerpts for the controller tests


def wire_kind(record: Received) -> str:
    """One letter per received line: F file line (also a re-sent one), P pause, U resume (restore), C
    cancel G-code of SafePause, X anything else."""
    tags = record.tags or ()
    if record.fileline is not None:
        return "F"
    for letter, tag in (("P", "safepause:pause"), ("U", "safepause:resume"), ("C", "safepause:cancel")):
        if tag in tags:
            return letter
    return "X"


def check_pause_placement(records: list[Received], saved_lines: list[str | None]) -> list[str]:
    """Completed pauses in the wire, one entry of `saved_lines` per pause in order (the saved line's text,
    None when the fallback held without one). Each pause's lines form one group between two consecutive
    file lines: pause lines, then restore lines (other lines, e.g. terminal commands, may come between
    them but not after the restore lines); with a saved line, the line right after the group is its
    re-send (tagged safepause:resend, same text, the next file line number). Returns the problems."""
    problems = []
    kinds = [wire_kind(r) for r in records]
    groups, previous = [], -1
    for i in [i for i, k in enumerate(kinds) if k == "F"] + [len(records)]:
        inner = [j for j in range(previous + 1, i) if kinds[j] in "PUC"]
        if inner:
            groups.append((previous, i, inner))
        previous = i
    if len(groups) != len(saved_lines):
        problems.append(f"{len(groups)} groups of SafePause lines for {len(saved_lines)} completed pauses")
    for n, ((before, after, inner), saved) in enumerate(zip(groups, saved_lines)):
        text = "".join(kinds[j] for j in inner)
        if not re.fullmatch(r"P+U+", text):
            problems.append(f"pause {n}: SafePause lines {text!r} are not pause lines then restore lines")
        if after < len(records) and inner[-1] != after - 1:
            problems.append(f"pause {n}: {records[inner[-1] + 1 : after]} between the restore and next line")
        previous_line = records[before].fileline if before >= 0 else 0
        resend = records[after] if after < len(records) else None
        if saved is None:
            if resend is not None and "safepause:resend" in (resend.tags or ()):
                problems.append(f"pause {n}: a re-send without a saved line")
        elif resend is None:
            problems.append(f"pause {n}: saved line {saved!r} never re-sent")
        elif "safepause:resend" not in (resend.tags or ()) or resend.cmd != saved:
            problems.append(f"pause {n}: after the restore lines came {resend}, not the re-send of {saved!r}")
        elif resend.fileline != previous_line + 1:
            problems.append(f"pause {n}: re-sent line {resend.fileline} after line {previous_line}")
    resent = sum("safepause:resend" in (r.tags or ()) for r in records)
    expected = sum(s is not None for s in saved_lines)
    if resent != expected:
        problems.append(f"{resent} re-sent lines for {expected} saved lines")
    return problems


def corpus_excerpt(
    path, folder, rng, budget: int = 12000, full: bool = False, extra=(rb"M600", rb"M601", rb"G4")
):
    """`path` itself when it has at most `budget` lines (or `full`), else a copy with the same name (the
    rig picks profile and flavour from it) made of whole layers of the real file: the start G-code and
    first 3 layers, the two layers around every line starting with one of `extra`, random middle layers
    up to `budget` lines, the last layer and the end G-code."""
    path = Path(path)
    lines = path.read_bytes().splitlines(keepends=True)
    if full or len(lines) <= budget:
        return path
    marks = [i for i, line in enumerate(lines) if line.startswith((b";LAYER_CHANGE", b";LAYER:"))]
    chunks = [(0, marks[3]), (marks[-2], len(lines))]
    special = re.compile(rb"(" + b"|".join(extra) + rb")\b") if extra else None
    for i in range(marks[3], marks[-2]):
        if special is not None and special.match(lines[i]):
            start = max(m for m in marks if m <= i)
            after = [m for m in marks if m > i]
            chunks.append((start, after[1] if len(after) > 1 else len(lines)))
    used = sum(end - start for start, end in chunks)
    middle = marks[4:-3]
    for _attempt in range(20):
        if used >= budget or not middle:
            break
        start = rng.choice(middle)
        end = min(next((m for m in marks if m > start + (budget - used) // 2), marks[-2]), marks[-2])
        if end > start:
            chunks.append((start, end))
            used += end - start
    merged: list[list[int]] = []
    for start, end in sorted(chunks):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / path.name
    out.write_bytes(b"".join(b"".join(lines[start:end]) for start, end in merged))
    return out


def head_and_tail(path, folder, head_layers: int = 2, tail_lines: int = 0):
    """A short real print: the start G-code and the first `head_layers` layers of `path`, then its last
    layer and end G-code (or just its last `tail_lines` lines); same name (profile, flavour)."""
    path = Path(path)
    lines = path.read_bytes().splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.startswith((b";LAYER_CHANGE", b";LAYER:"))]
    tail = len(lines) - tail_lines if tail_lines else marks[-1]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / path.name
    out.write_bytes(b"".join(lines[: marks[head_layers]] + lines[tail:]))
    return out
