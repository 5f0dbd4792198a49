"""The pause controller: a state machine on its own thread, fed by a queue.

Threads that call in (OctoPrint's comm threads through the queuing hook, HTTP threads through the API,
other plugins through the helpers, the event bus) only read flags, put requests on the queue and
return. The controller thread does the work: it takes and releases the job hold, builds the printer
state, and sends the pause / resume / cancel G-code through a `PrinterPort`.

The hot path is `on_queuing`: OctoPrint calls it for every line. While nothing is armed it costs one
attribute read and one set lookup. The printer state is not tracked per line there; a shadow tracker
on the controller thread follows the print file (and the few non-file commands the hook notes) a
little behind the printer, so at pause time only the last few lines need reading.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from . import filament, status
from .gcode import MODELLED_COMMANDS, StateTracker, parse_line
from .gcode.follower import FileFollower
from .gcode.state import KLIPPER, PRUSA
from .heater_clock import HeaterClock
from .port import JobInfo, PrinterPort
from .safety import SafetyCheck, check_pause, check_resume, left_as_found
from .schedule import MOVES, Schedule, Stop, StopRefused
from .sequences import (
    MotionSettings,
    PausePlan,
    Volume,
    mode_restore,
    needs_reheat,
    pause_sequence,
    reheat,
)
from .settings_schema import change_settings, motion_kwargs
from .shadow import MAX_NOTES, Shadow
from .template_runner import TemplateRunner
from .templates_gcode import TemplateError, build_context

IDLE, PAUSING, PAUSED, RESUMING, CANCELLING = "idle", "pausing", "paused", "resuming", "cancelling"

TAG_PAUSE = "safepause:pause"
TAG_RESUME = "safepause:resume"
TAG_RESEND = "safepause:resend"
TAG_CANCEL = "safepause:cancel"
TAG_STOP = "safepause:stop"  # the G-code of a scheduled stop
OWN_TAG_PREFIX = "safepause:"

# Non-file commands that change what the tracker knows: the tracker's own list (any flavour), named by
# its own parser (OctoPrint's `gcode` is None for Klipper's extended commands, and drops subcodes).
NOTED_GCODES = MODELLED_COMMANDS
# Events that end a print or the connection: a pause waiting for its hold stops waiting at once.
ENDING_EVENTS = frozenset(
    ["PrintCancelling", "PrintCancelled", "PrintFailed", "PrintDone", "Disconnecting", "Disconnected", "Error"]
)
SHADOW_INTERVAL = 1.0  # s between shadow tracker catch-ups while printing

# OctoPrint's own pause, taking shape in its job queue: setPause(True) queues M400 / M114 (and switches
# position autoreport off) with these tags; the lines reach the hook before they are sent.
NATIVE_PAUSE_TAGS = frozenset(["trigger:comm.set_pause", "trigger:pause"])
# The scripts OctoPrint runs around its own pause: SafePause runs their content itself, at the park.
OCTOPRINT_PAUSE_SCRIPTS = ("afterPrintPaused", "beforePrintResumed")
_SCRIPT_TAGS = frozenset("script:" + name for name in OCTOPRINT_PAUSE_SCRIPTS)
# The file's filament change, run by the host (the filament_change setting)
CHANGE_COMMANDS = frozenset(["M600"])
PRUSA_PAUSES = frozenset(["M601"])
HOST_PAUSES = frozenset(["@pause"])  # OctoPrint's host command
KLIPPER_PAUSE = "pause"  # Klipper's PAUSE macro (first word, lower case)


# The print's own states: a command the cancel or end script sends after the print, while its file is
# still selected, must not enter the next print's state.
_IN_PRINT = frozenset(["starting", "printing", "pausing", "paused", "resuming"])


class Refused(Exception):
    """A request that does not fit the current state; the message says why."""


@dataclass
class PauseToken:
    """One pause, from request to its end. Resume and cancel act only on the live token."""

    reason: str | None
    source: str | None
    requested_at: float
    job: JobInfo
    heaters: HeaterClock | None = None  # from the moment the hold is taken
    saved: list[tuple[str, str | None, set]] = field(default_factory=list)
    filepos: int | None = None  # byte position the print continues from (end of the last line sent)
    state: object = None  # PrinterState snapshot at the hold
    plan: PausePlan | None = None
    pause_sent: bool = False  # the pause lines went out (so cancel has modes to restore)
    warnings: list[str] = field(default_factory=list)
    snapshot: dict | None = None  # state.as_dict(), made once for the status
    change: str | None = None  # a filament change: its step (unloading, unloaded, purging, loaded)
    unloaded: bool = False  # the unload went out (a recovery must load before it goes on)
    loaded: bool = False  # the new filament was pushed in (load_length)
    purged: float = 0.0  # mm purged at the change position so far
    stops: list = field(default_factory=list)  # the scheduled stops reached at this line
    inject: tuple = ()  # their G-code, sent at the layer start before anything else
    hold_only: bool = False  # G-code stops only: no pause, the print goes on after it


class PauseController:
    def __init__(
        self,
        port: PrinterPort | None,
        emit: Callable[[str, dict], None] | None = None,
        settings: Callable[[], dict] | None = None,
        flavour: Callable[[], str] | None = None,
        logger: logging.Logger | None = None,
        hold_timeout: float = 2.0,
        templates: TemplateRunner | None = None,
    ):
        self.hold_timeout = hold_timeout
        # Users' templates render in a worker process, bounded in time: never on this thread.
        self.templates = templates or TemplateRunner()

        self._requests: queue.Queue = queue.Queue()
        self._lock = threading.RLock()  # guards state + token + hold ownership; never held while blocking
        self._armed = False  # read by the hook without the lock: the GIL makes the read atomic
        self._holding = False  # we own (or have claimed) exactly one count of OctoPrint's job hold
        self._waiting: str | None = None  # the scheduler holds the print until its layers are read
        self._hold_pending = False  # claimed by the hook, still to be taken by the controller
        self._state = IDLE
        self._since = time.time()
        self._token: PauseToken | None = None
        self._last_error: str | None = None
        self._last: dict = {}

        self._shadow = Shadow()
        self._deferred: list = []

        # Every pause source goes through SafePause (the take_over_pause setting): the print file's own
        # pause commands, as OctoPrint passes them to the hook (None: a host command such as @pause).
        self._take_over = True
        self._file_pauses: frozenset = frozenset()
        self._host_pauses: frozenset = HOST_PAUSES  # file lines with no G/M code that are pauses
        # The running print's scheduled stops: the hook looks for the tag OctoPrint gives the next one's
        # line (filepos:<its end>) among the file's moves only (_file_watch), nothing while none is set.
        self._schedule: Schedule | None = None
        self._stop_tag: str | None = None
        self._file_watch: frozenset = frozenset()
        # OctoPrint is in a pause SafePause made (Paused, or Resuming until its marker passed the hold):
        # its own pause lines and pause scripts arriving now belong to that pause and are dropped.
        self._in_octoprint_pause = False

        self._thread: threading.Thread | None = None
        self._stopping = False
        self.bind(port, emit, settings, flavour, logger)

    # ------------------------------------------------------------------ lifecycle

    def bind(self, port, emit=None, settings=None, flavour=None, logger=None, recovery=None) -> None:
        self._port = port
        self._recovery = recovery  # RecoveryService or None: told where a print stands and ends
        self._emit = emit or (lambda name, payload: None)
        self._settings = settings or dict
        self._flavour = flavour or (lambda: "marlin")
        self._log = logger or logging.getLogger(__name__)
        self.configure()

    def configure(self) -> None:
        """Read the take-over switch and OctoPrint's pausing commands (at bind, settings save, print start)."""
        values = self._settings() or {}
        self._take_over = bool(values.get("take_over_pause", True))
        codes: frozenset = frozenset()
        if self._take_over and self._port is not None:
            try:
                codes = frozenset(self._port.pausing_commands()) | {None}
            except Exception:
                self._log.exception("SafePause: could not read OctoPrint's pausing commands")
        flavour = self._flavour()
        if self._take_over and flavour == PRUSA:
            codes |= PRUSA_PAUSES  # Prusa's "pause print", as M0 elsewhere
        # Klipper's PAUSE macro, which slicers write for a Klipper printer's "pause print": a line with no
        # G/M code, as @pause (None is among the codes looked at whenever the pause is taken over)
        self._host_pauses = HOST_PAUSES | ({KLIPPER_PAUSE} if flavour == KLIPPER else frozenset())
        if values.get("filament_change", "host") == "host":
            codes |= CHANGE_COMMANDS
        self._file_pauses = codes
        with self._lock:
            self._aim()

    def _aim(self) -> None:
        """Point the hook at the next scheduled stop's line (under self._lock): the tag first, then the
        moves added to the G-codes the hook looks at."""
        target = self._schedule.target() if self._schedule is not None else None
        self._stop_tag = None if target is None else f"filepos:{target}"
        self._file_watch = self._file_pauses | MOVES if target is not None else self._file_pauses

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="safepause-controller", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._requests.put_nowait(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)
        self.templates.close()
        token = self._token
        if self._holding and token is not None:
            # Releasing now would let OctoPrint stream on from the park position, retracted, in the
            # pause's modes, for as long as the connection outlives us. The hold ends with the process;
            # the recovery continues from the saved line.
            self._log.warning("SafePause: OctoPrint shuts down during a hold: the print stays held")
            self._correct_recovery(token)
            return
        self._release_hold()

    # ------------------------------------------------------------------ the hook (OctoPrint's threads)

    def on_queuing(self, comm, phase, cmd, cmd_type, gcode, subcode=None, tags=None, *args, **kwargs):
        if not self._armed:
            if not tags:
                return None
            if "source:file" in tags:
                # the idle cost for a file line: one set lookup (OctoPrint parsed `gcode` already)
                return self._file_line(cmd, cmd_type, gcode, tags) if gcode in self._file_watch else None
            if not NATIVE_PAUSE_TAGS.isdisjoint(tags) or "source:script" in tags:
                dropped = self._octoprint_pause_line(cmd, tags)
                if dropped is not None:
                    return dropped
            if parse_line(cmd).command in NOTED_GCODES:
                self._note(cmd, tags)
            return None
        if not tags or "source:file" not in tags or TAG_RESEND in tags:
            if tags and (not NATIVE_PAUSE_TAGS.isdisjoint(tags) or "source:script" in tags):
                return self._octoprint_pause_line(cmd, tags)
            return None
        with self._lock:
            if not self._armed:
                return None
            token = self._token
            if token is not None:
                token.saved.append((cmd, cmd_type, set(tags)))
            if not self._holding:
                # Synchronously: a hook that only signals lets OctoPrint read on and suppress the rest
                # of the file (notes §2.6). Non-blocking: a thread inside OctoPrint's job_on_hold()
                # context manager owns the hold mutex and may wait for the job lock this thread holds;
                # then the controller takes the hold a moment later instead.
                self._holding = True
                self._hold_pending = not self._port.try_hold()
                self._requests.put_nowait(("held", token))
        return (None,)

    def _file_line(self, cmd, cmd_type, gcode, tags):
        """A file line the hook looks at: a scheduled stop's (by its position) or a pause command."""
        tag = self._stop_tag
        if tag is not None and tag in tags and TAG_RESEND not in tags:
            return self._stop_reached(cmd, cmd_type, tags, tag)
        if gcode in self._file_pauses:
            return self._file_pause(cmd, gcode, tags)
        return None

    def _stop_reached(self, cmd, cmd_type, tags, tag):
        """The first deposit line of a scheduled stop's layer is being queued: hold it back and pause (or
        send the stop's G-code) before it. From the hook, inside OctoPrint's job lock."""
        try:
            job = self._port.job()
        except Exception:
            job = None
        with self._lock:
            schedule = self._schedule
            if schedule is None or tag != self._stop_tag or job is None or job.path != schedule.path:
                return None
            due = schedule.reached(int(tag[8:]))
            self._aim()
        if not due:
            return None
        change = any(stop.action == "filament_change" for stop in due)
        pause = change or any(stop.action == "pause" for stop in due)
        inject = tuple(line for stop in due if stop.action == "gcode" for line in stop.gcode)
        reason = "; ".join(stop.message for stop in due if stop.message) or "scheduled " + due[0].describe()
        started = self._start_pause(
            reason, "schedule", ("printing", "starting"), log_refusal=f"the scheduled {due[0].describe()}",
            change=change, saved=(cmd, cmd_type, set(tags)), stops=due, inject=inject, hold_only=not pause,
        )
        return (None,) if started else None

    def _file_pause(self, cmd, gcode, tags):
        """M0 / M1 / M25 / @pause (on Klipper also PAUSE) in the print file: a SafePause pause at exactly
        this line. The command itself is not sent; the next line waits behind the hold and goes out on
        resume."""
        name = gcode
        if gcode is None:
            word = cmd.split(None, 1)[0].lower() if cmd.strip() else ""
            if word not in self._host_pauses:
                return None
            name = word if word.startswith("@") else word.upper()
        line = next((tag[9:] for tag in tags if tag.startswith("fileline:")), None)
        reason = f"{name} in the file" + (f" (line {line})" if line else "")
        change = gcode in CHANGE_COMMANDS
        if not self._start_pause(
            reason, "file", ("printing", "starting"), log_refusal=f"{name} in the file", change=change
        ):
            return None  # OctoPrint's (or the firmware's) own handling, as without SafePause
        return (None,)

    def _octoprint_pause_line(self, cmd, tags):
        """A line of OctoPrint's own pause (M400/M114 of setPause(True)) or of its pause scripts. While
        SafePause owns a pause it belongs to that pause and is dropped; a new OctoPrint pause (another
        plugin's pause_print(), //action:pause) is taken over: its lines are dropped and SafePause parks.
        None: let it through."""
        if any(tag.startswith(OWN_TAG_PREFIX) for tag in tags):
            return None
        ours = self._state != IDLE or self._in_octoprint_pause
        if "source:script" in tags:
            if ours and not _SCRIPT_TAGS.isdisjoint(tags):
                self._log.info("SafePause: OctoPrint's own %s line dropped (SafePause ran the script): %s",
                               next(iter(_SCRIPT_TAGS & tags))[7:], cmd)
                return (None,)
            return None
        if not NATIVE_PAUSE_TAGS.issubset(tags):
            return None
        if ours:
            self._log.info("SafePause: OctoPrint's own pause line dropped, the print is paused already: %s", cmd)
            return (None,)
        if not self._take_over:
            return None
        source, reason = _native_pause_origin(tags)
        if not self._start_pause(reason, source, ("pausing",), log_refusal="OctoPrint's own pause"):
            return None
        return (None,)

    def _start_pause(
        self, reason, source, printer_states, log_refusal, change=False, saved=None, stops=(), inject=(),
        hold_only=False,
    ) -> bool:
        """From the hook (a comm thread, inside the job lock): a pause that holds at once, at this line.
        False when it does not fit: the source then gets OctoPrint's own pause, and the status says so.
        `saved`: the line itself, held back and sent on resume (a scheduled stop's)."""
        try:
            token = self._arm(reason, source, printer_states, change)
        except Refused as refused:
            if stops:
                message = f"{log_refusal} did not happen: {refused}"
            else:
                message = f"{log_refusal}: OctoPrint pauses on its own ({refused})"
            self._log.warning("SafePause: %s", message)
            self._last_error = message
            return False
        token.stops, token.inject, token.hold_only = list(stops), tuple(inject), hold_only
        if saved is not None:
            token.saved.append(saved)  # before the controller can read it: the state ends before this line
        with self._lock:
            self._holding = True
            self._hold_pending = not self._port.try_hold()
        self._requests.put_nowait(("pause", token))
        self._requests.put_nowait(("held", token))
        return True

    def _note(self, cmd, tags) -> None:
        if any(tag.startswith(OWN_TAG_PREFIX) for tag in tags):
            return
        try:
            if self._port.state() not in _IN_PRINT:
                return
            job, position = self._port.job(), self._port.file_position()
        except Exception:
            return
        if job is None or job.origin != "local" or position is None:
            return
        self._shadow.note(int(position), cmd)

    # ------------------------------------------------------------------ requests (any thread)

    def pause(self, reason: str | None = None, source: str | None = None) -> None:
        """Raises Refused with the reason when a pause does not fit now."""
        token = self._arm(reason, source, ("printing",))
        self._requests.put_nowait(("pause", token))

    def change_filament(self, reason: str | None = None, source: str | None = None) -> None:
        """A pause parked at the change position that unloads the filament; resume (or purge) loads."""
        token = self._arm(reason, source, ("printing",), change=True)
        self._requests.put_nowait(("pause", token))

    def purge(self, length: float | None = None) -> None:
        """During a filament change: load (the first time), then extrude `length` mm at the change position."""
        with self._lock:
            token = self._token
            if self._state != PAUSED or token is None or token.change is None:
                raise Refused(f"not paused for a filament change (state: {self._state})")
            if token.change == "purging":
                raise Refused("already purging")
            token.change = "purging"
        self._requests.put_nowait(("purge", token, length))

    def _arm(self, reason, source, printer_states, change=False) -> PauseToken:
        with self._lock:
            if self._state != IDLE:
                raise Refused(f"already {self._state}")
            printer_state = self._port.state()
            if printer_state not in printer_states:
                if printer_state == "paused":
                    raise Refused("the printer is paused by OctoPrint, not by SafePause: resume it first")
                raise Refused(f"the printer is {printer_state}, not printing")
            job = self._port.job()
            if job is None:
                raise Refused("no print job is selected")
            if job.origin != "local" or not job.disk_path:
                raise Refused("only prints streamed from OctoPrint can be held (this is an SD card print)")
            self._token = PauseToken(reason, source, time.time(), job, change="unloading" if change else None)
            self._last_error = None
            self._set_state(PAUSING)
            self._armed = True
            return self._token

    def resume(self, source: str | None = None) -> None:
        with self._lock:
            if self._state != PAUSED:
                raise Refused(f"not paused (state: {self._state})")
            self._set_state(RESUMING)
        self._requests.put_nowait(("resume", self._token, source))

    def cancel(self) -> None:
        with self._lock:
            if self._state not in (PAUSING, PAUSED):
                raise Refused(f"nothing to cancel (state: {self._state})")
            self._set_state(CANCELLING)
        self._requests.put_nowait(("cancel", self._token, True))

    def try_(self, action: Callable, *args, **kwargs) -> bool:
        try:
            action(*args, **kwargs)
            return True
        except Refused as refused:
            self._log.info("SafePause request refused: %s", refused)
            return False

    def on_printer_event(self, name: str, payload: dict | None = None) -> None:
        """OctoPrint events, from the event bus thread; handled on the controller thread."""
        self._requests.put_nowait(("event", name, payload or {}))

    # ------------------------------------------------------------------ state for API / UI

    @property
    def state(self) -> str:
        return self._state

    @property
    def holding(self) -> bool:
        return self._holding

    def current_pause(self):
        """(PrinterState, PausePlan) of the live pause once it holds, else None."""
        with self._lock:
            token = self._token
            if token is None or token.state is None or token.plan is None:
                return None
            return token.state, token.plan

    def get_state(self) -> dict:
        """The one status (status.KEYS): what REST, the helpers, the sidebar and the events show."""
        stops = self.stops()
        with self._lock:
            token = self._token if self._state != IDLE else None
            data = status.idle(self._since, self._holding, self._last_error, self._waiting)
            data["stops"] = stops
            data["state"] = self._state
            if token is not None:
                data.update(self._token_status(token))
        return data

    def _token_status(self, token: PauseToken) -> dict:
        state = token.state
        if state is not None and token.snapshot is None:
            token.snapshot = state.as_dict()  # once per pause: the state at the hold never changes
        return {
            "reason": token.reason,
            "source": token.source,
            "file": token.job.path,
            "origin": token.job.origin,
            "filepos": token.filepos,
            "saved_line": token.saved[0][0] if token.saved else None,
            "position": None if state is None else {"x": state.x, "y": state.y, "z": state.z, "e": state.e},
            "snapshot": token.snapshot,
            "warnings": (list(token.plan.warnings) if token.plan else []) + token.warnings,
            "heaters_off": bool(token.heaters and token.heaters.heaters_off),
            "heater_action_in": token.heaters.action_in(time.time()) if token.heaters else None,
            "change": None if token.change is None else {"step": token.change, "purged": token.purged},
        }

    # ------------------------------------------------------------------ controller thread

    def _run(self) -> None:
        next_shadow = time.monotonic()
        while not self._stopping:
            try:
                request = self._requests.get(timeout=SHADOW_INTERVAL)
            except queue.Empty:
                request = None
            try:
                if request is not None:
                    self._handle(request)
                if time.monotonic() >= next_shadow:
                    if self._state == IDLE:
                        self._catch_up_shadow()
                    elif self._state == PAUSED:
                        self._heater_tick(self._token)
                        self._octoprint_resumed(None)  # should its PrintResumed event not have come
                    next_shadow = time.monotonic() + SHADOW_INTERVAL
            except Exception:
                self._log.exception("SafePause controller error")
                self._fail("internal error, see octoprint.log")

    def _handle(self, request) -> None:
        kind = request[0]
        if kind == "stop":
            return
        if kind == "pause":
            self._do_pause(request[1])
        elif kind == "held":
            pass  # consumed inside _do_pause; a late one after a failure is harmless
        elif kind == "parked":
            self._parked(request[1])
        elif kind == "purge":
            self._do_purge(request[1], request[2])
        elif kind == "resume":
            self._do_resume(request[1], request[2])
        elif kind == "cancel":
            self._do_cancel(request[1], request[2])
        elif kind == "event":
            self._on_event(request[1], request[2])

    def _wait_for_hold(self, token: PauseToken) -> bool | None:
        """True once we hold, False if the print is gone, None if a cancel or an ending event came
        first (it is left in self._deferred)."""
        deadline = time.monotonic() + self.hold_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                break
            if request[0] == "held" and request[1] is token:
                if self._hold_pending:
                    self._hold_pending = False
                    self._take_hold()
                return True
            self._deferred.append(request)
            if request[0] == "cancel" or (request[0] == "event" and request[1] in ENDING_EVENTS):
                return None
        # No file line came (long M109/M190/G4, or another plugin holds the job): hold it ourselves.
        # The hook stays armed for the one line that may still be racing through _send_from_job.
        with self._lock:
            if self._holding:
                return True
            # pausing: OctoPrint's own pause came in meanwhile; its M400 was dropped, this pause is its pause
            if self._port.state() not in ("printing", "pausing"):
                return False
            self._holding = True  # claimed: the hook will not take a second count
        self._take_hold()
        # That racing line must land in token.saved before the file position is taken, or the snapshot
        # would include a line that is still to be sent: wait until the reader is past it.
        if not self._port.wait_for_reader(1.0):
            self._log.warning("SafePause: OctoPrint's job reader stayed busy; the state may be a line ahead")
        return True

    def _do_pause(self, token: PauseToken) -> None:
        if token is not self._token or self._state != PAUSING:
            return
        self._deferred = []
        try:
            held = self._wait_for_hold(token)
        except RuntimeError as error:
            held = False
            self._log.warning("SafePause could not take the hold: %s", error)
        if held is None:
            self._replay_deferred()  # the cancel or the event ends this pause (and any hold it raced)
            return
        if not held:
            with self._lock:
                self._armed = False
            self._finish(f"the print is no longer running ({self._port.state()}): nothing to pause")
            self._replay_deferred()
            return
        token.heaters = HeaterClock(held_at=time.time())
        values, profile, settings = self._current_settings(token)
        volume = Volume.from_profile(profile)
        token.state = self._state_at(token)
        for stop in token.stops:
            self._emit("stop_reached", self._stop_payload(token, stop))
        if token.inject:
            self._inject(token, volume)
        if token.hold_only:
            self._go_on(token)
            self._replay_deferred()
            return
        # On disk before anything moves: if OctoPrint stops or is killed during the hold, the recovery
        # continues from the held line (nothing runs at a SIGKILL, so not at shutdown only).
        self._correct_recovery(token)
        token.plan = pause_sequence(token.state, volume, settings, temperatures=self._port.temperatures())
        checked = check_pause(token.state, token.plan, volume)
        if checked.builtin:
            # Never expected (the built-in sequences are checked over the whole corpus): nothing moved,
            # so the print goes on as if there had been no pause.
            self._abort_pause(token, f"pause refused by the safety check: {checked.builtin[0]}")
            self._replay_deferred()
            return
        if self._shadow.dropped:
            token.warnings.append(
                f"more than {MAX_NOTES} commands from outside the file during this print: "
                "the tracked state may miss some of them"
            )
        if self._state == PAUSING:  # a cancel may already be waiting in the deferred requests
            try:
                # The safe part (retract, lift, park) first: the user's template, however slow, comes after.
                self._send(checked.lines, TAG_PAUSE)
                token.pause_sent = True
                self._correct_recovery(token)  # now with the lifted nozzle's height
                self._send(self._pause_template_lines(token, values, profile, settings, volume), TAG_PAUSE)
                if token.change is not None:
                    unload = self._unload_lines(token, values, profile, volume)
                    if unload:
                        token.unloaded = True  # before it goes out: part of it may reach the printer
                        self._correct_recovery(token)
                    self._send(unload, TAG_PAUSE)
                # Paused once the printer has the whole park (a busy printer, deep in an M109, takes it
                # later): until then the lines go out numbered, as OctoPrint numbers them only while printing
                self._port.sync({TAG_PAUSE}, lambda: self._requests.put_nowait(("parked", token)))
            except RuntimeError as error:
                self._connection_lost(token, error)
                self._replay_deferred()
                return
            for warning in token.plan.warnings + token.warnings:
                self._log.warning("SafePause: %s", warning)
        self._replay_deferred()

    def _inject(self, token: PauseToken, volume: Volume) -> None:
        """A scheduled stop's G-code, at the layer start: checked against the state there (the one safety
        check, and it must leave the printer as it found it), else skipped with a warning."""
        state = token.state
        check = SafetyCheck(volume, state, flavour=state.flavour)
        feedrate = check.state.f  # the check's own start (it knows no feedrate): only a change counts
        problems = check.check(list(token.inject), user=True)
        problem = str(problems[0]) if problems else left_as_found(state, check.state)
        if problem:  # logged with the pause's warnings, or when the hold ends
            token.warnings.append(f"the scheduled stop's G-code was not sent, refused by the safety check: {problem}")
            return
        lines = list(token.inject)
        if state.f is not None and check.state.f != feedrate:
            lines.append(f"G1 F{state.f:g}")  # the file's next move may carry no feedrate of its own
        try:
            self._send(lines, TAG_STOP)
        except RuntimeError as error:
            token.warnings.append(f"the scheduled stop's G-code was not sent: {error}")
            return
        for line in lines:  # the shadow knows them (a temperature set for the layers above)
            self._shadow.note(token.filepos, line)
        self._log.info("SafePause sent the scheduled G-code at layer start: %s", ", ".join(lines))

    def _go_on(self, token: PauseToken) -> None:
        """The end of a hold that paused nothing (G-code stops): the held line, then the file."""
        try:
            self._resend_saved(token)
        except RuntimeError as error:
            self._connection_lost(token, error)
            return
        except BaseException:
            self._release_hold()
            raise
        self._hand_back(token.warnings[-1] if token.warnings else None)

    def _resend_saved(self, token: PauseToken) -> None:
        """The held line(s), re-sent while still held: straight to the send queue, ahead of the next file
        line. Disarmed first: the hook lets them (and the file after them) through."""
        with self._lock:
            self._armed = False
            saved = list(token.saved)
        for cmd, _cmd_type, tags in saved:
            self._port.send([cmd], set(tags) | {TAG_RESEND})
        token.saved = []

    def _stop_payload(self, token: PauseToken, stop: Stop) -> dict:
        return {"stop": stop.public(), "message": stop.message, "action": stop.action, "file": token.job.path}

    # ------------------------------------------------------------------ scheduled stops (any thread)

    def set_schedule(self, schedule: Schedule | None) -> None:
        """The running print's stops (None: no print, or its layers are not known yet)."""
        with self._lock:
            self._schedule = schedule
            self._aim()

    def schedule_path(self) -> str | None:
        """The file of the running print's schedule, or None."""
        schedule = self._schedule
        return schedule.path if schedule is not None else None

    def schedule_stop(self, stop: Stop) -> Stop:
        """Add a stop to the running print (StopRefused: none with known layers, or it is past)."""
        with self._lock:
            schedule = self._schedule
            if schedule is None:
                raise StopRefused("no print with known layers is running")
            resolved = schedule.add(stop, self._port.file_position())
            self._aim()
            # OctoPrint may have read the line meanwhile, before the hook knew its tag
            now = self._port.file_position()
            if now is not None and resolved.end <= now:
                schedule.remove(resolved.id)
                self._aim()
                raise StopRefused(f"layer {resolved.layer.number} started while the stop was being set")
            return resolved

    def unschedule_stop(self, stop_id: str) -> Stop | None:
        with self._lock:
            schedule = self._schedule
            removed = schedule.remove(stop_id) if schedule is not None else None
            self._aim()
            return removed

    def set_waiting(self, what: str | None) -> None:
        """Why the print is held without a pause (status `waiting`), or None once it goes on."""
        self._waiting = what

    def report(self, message: str) -> None:
        """Something the user should know about the running print (a scheduled stop that cannot apply):
        logged, and the status's `error` while no pause is live."""
        self._log.warning("SafePause: %s", message)
        with self._lock:
            if self._state == IDLE:
                self._last_error = message

    def stops(self) -> list:
        """The running print's stops still ahead, as the status shows them."""
        schedule = self._schedule
        if schedule is None or not schedule.stops:
            return []
        try:  # outside the lock: OctoPrint's own locks
            read_pos, time_left = self._port.file_position(), self._port.time_left()
            job = self._port.job()
        except Exception:
            read_pos = time_left = job = None
        with self._lock:
            return schedule.public(read_pos, time_left, job.size if job else None)

    def _skip_passed_stops(self, read_pos: int | None) -> None:
        """Stops whose line went out without the hook firing (another pause held exactly that line and
        sent it again on resume): moved on (every N) or gone."""
        if read_pos is None or self._schedule is None:
            return  # no lock taken while nothing is scheduled (this runs every second)
        with self._lock:
            schedule = self._schedule  # it may have gone meanwhile (the print ended)
            passed = schedule.skip_passed(read_pos) if schedule is not None else []
            if passed:
                self._aim()
        for stop in passed:
            self._log.info("SafePause: the print went past the scheduled %s during another pause", stop.describe())

    def _parked(self, token: PauseToken) -> None:
        if token is not self._token or self._state != PAUSING:
            return  # cancelled or ended meanwhile
        # OctoPrint first: whoever sees SafePause paused sees OctoPrint paused (its own Resume arriving now
        # is an event, handled on this thread after this)
        self._enter_octoprint_pause(token)
        with self._lock:
            if token.change is not None:
                token.change = filament.UNLOADED
            self._set_state(PAUSED)
        self._emit("paused", self._event_payload(token))
        if token.change is not None:
            self._emit("filament_change", self._change_payload(token))
        self._heater_tick(token)

    # ------------------------------------------------------------------ filament change

    def _unload_lines(self, token: PauseToken, values, profile, volume) -> list:
        """Pull the filament out at the change position (heating first if the hotend is cold)."""
        change = change_settings(values, profile)
        lines = filament.unload_lines(token.state, token.plan, change, token.plan.flavour)
        if not token.plan.hot:
            lines = reheat(token.state, wait=True, flavour=token.plan.flavour) + lines
        refused = check_pause(token.state, token.plan, volume, lines).user
        if refused:
            token.warnings.append(f"filament not unloaded, refused by the safety check: {refused[0]}")
            return []
        return lines

    @staticmethod
    def _change_lines(token: PauseToken, change, length: float) -> list:
        """Load (the first time) and purge `length` mm at the change position."""
        lines = [] if token.loaded else filament.load_lines(change)
        if length > 0:
            lines += filament.purge_lines(length, change)
        return lines

    def _needs_heat(self, token: PauseToken) -> bool:
        """The hotend must be heated (and waited for) before anything extrudes: the heater policy switched
        it off, or someone changed the temperatures during the hold."""
        heaters_off = bool(token.heaters and token.heaters.heaters_off)
        return heaters_off or needs_reheat(token.state, self._port.temperatures())

    def _do_purge(self, token: PauseToken, length: float | None) -> None:
        if token is not self._token or self._state != PAUSED:
            # resumed or cancelled meanwhile: the resume loads and purges itself if need be
            token.change = filament.LOADED if token.loaded else filament.UNLOADED
            return
        values, profile, settings = self._current_settings(token)
        volume = Volume.from_profile(profile)
        change = change_settings(values, profile)
        length = change.purge_length if length is None else length
        lines = self._change_lines(token, change, length)
        heaters_off = bool(token.heaters and token.heaters.heaters_off)
        if self._needs_heat(token):
            lines = reheat(token.state, wait=True, flavour=token.plan.flavour) + lines
        refused = check_pause(token.state, token.plan, volume, lines).user
        with self._lock:
            token.change = filament.LOADED if token.loaded else filament.UNLOADED
            if refused:
                self._last_error = f"purge refused by the safety check: {refused[0]}"
        if refused:
            self._log.error("SafePause: %s", self._last_error)
            return
        try:
            self._send(lines, TAG_PAUSE)
        except RuntimeError as error:
            self._connection_lost(token, error)
            return
        with self._lock:
            token.loaded = True
            token.change = filament.LOADED
            token.purged += length
        if token.unloaded:
            self._correct_recovery(token)  # loaded: a recovery from here needs no load
        if heaters_off:
            token.heaters = HeaterClock(held_at=time.time())  # hot again: the policy starts over
        self._emit("filament_change", self._change_payload(token))

    def _change_payload(self, token: PauseToken) -> dict:
        return dict(self._event_payload(token), step=token.change, purged=token.purged)

    def _enter_octoprint_pause(self, token: PauseToken | None) -> None:
        """OctoPrint's state becomes Paused and PrintPaused fires: every app, event and notifier sees it."""
        self._in_octoprint_pause = True
        try:
            self._port.enter_pause(_user_of(token.source) if token else None)
        except Exception as error:
            self._log.warning("SafePause: OctoPrint's state could not be set to Paused: %s", error)

    def _octoprint_resumed(self, user: str | None) -> None:
        """OctoPrint's own Resume (its button, /api/job, another plugin, //action:resume) on a SafePause
        pause: it is this pause's resume."""
        if self._state != PAUSED:
            return
        try:
            resumed = self._port.state() == "resuming"
        except Exception:
            return
        if resumed:
            source = f"user:{user}" if user else "octoprint"
            self._log.info("SafePause: OctoPrint's own resume (%s) resumes the SafePause pause", source)
            self.try_(self.resume, source)

    def _pause_template_lines(self, token, values, profile, settings, volume) -> list:
        """The user's pause template, then OctoPrint's afterPrintPaused script, each bounded in time and
        checked; one that fails is left out with a warning."""
        lines = []
        for name, render in (
            ("pause template", lambda: self._render("pause_template", values, token, profile, settings, volume)),
            ("OctoPrint's afterPrintPaused script", lambda: self._octoprint_script("afterPrintPaused", values, token, profile, settings, volume)),
        ):
            try:
                more = render()
            except TemplateError as error:
                token.warnings.append(f"{name} skipped: {error}")
                continue
            refused = check_pause(token.state, token.plan, volume, lines + more).user
            if refused:
                token.warnings.append(f"{name} skipped, refused by the safety check: {refused[0]}")
                continue
            lines += more
        return lines

    def _octoprint_script(self, name, values, token, profile, settings, volume) -> list:
        """The user's own OctoPrint script around a pause, run by SafePause at the park position (OctoPrint
        runs none of its own for a SafePause pause). Its `pause_position` is empty, as OctoPrint leaves it
        when no position was recorded: SafePause parked and returns, so scripts written the documented
        way (`{% if pause_position.x is not none %}` around their own park) do not park a second time.
        The exact position is `safepause.position`. Off with the run_octoprint_scripts setting."""
        if not values.get("run_octoprint_scripts", True):
            return []
        text = self._port.script(name)
        if not text or not text.strip():
            return []
        state = token.state
        position = {"x": state.x, "y": state.y, "z": state.z, "e": state.e, "f": getattr(state, "f", None)}
        empty = dict.fromkeys(("x", "y", "z", "e", "f", "t"))
        context = build_context(
            state,
            profile,
            settings,
            plan=token.plan,
            volume=volume,
            pause_position=empty,
            last_position=empty,
            safepause={"position": position, "reason": token.reason, "source": token.source},
        )
        return self.templates.render(text, context, name=name)

    def _abort_pause(self, token: PauseToken, message: str) -> None:
        """End a pause that moved nothing: the saved lines go out, in order, then the hold ends."""
        with self._lock:
            saved, token.saved = token.saved, []
            self._armed = False
        try:
            for cmd, _cmd_type, tags in saved:
                self._port.send([cmd], set(tags) | {TAG_RESEND})
        except RuntimeError as error:
            self._log.warning("SafePause: %s", error)
        self._log.error("SafePause: %s", message)
        if self._port.state() == "pausing":
            # an OctoPrint pause taken over (its M400 dropped): it ends as OctoPrint's own would, in place
            self._enter_octoprint_pause(token)
            self._in_octoprint_pause = False
        self._fail(message)

    def _render(self, key, values, token, profile, settings, volume) -> list:
        text = values.get(key) or ""
        if not text.strip():
            return []
        context = build_context(token.state, profile, settings, plan=token.plan, volume=volume)
        return self.templates.render(text, context, name=key)

    def _heater_tick(self, token: PauseToken | None) -> None:
        """The long-hold heater policy: acts when its next action is due."""
        now = time.time()
        if token is None or token.heaters is None or not token.heaters.due(now):
            return
        _, _, settings = self._current_settings(token)
        step = token.heaters.step(token.state, settings, token.plan.flavour, now)
        if step.lines and self._state == PAUSED:
            self._send(step.lines, TAG_PAUSE)
            held = now - token.heaters.held_at
            self._log.info("SafePause heater policy after %.0f s of hold: %s", held, ", ".join(step.lines))

    def _replay_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for request in deferred:
            self._handle(request)

    def _sent_until(self, token: PauseToken) -> int | None:
        """A byte position between the end of the last file line sent and the end of the next one."""
        with self._lock:
            saved = list(token.saved)
        if saved:
            for tag in saved[0][2]:
                if tag.startswith("filepos:"):
                    # the tag is the end of the saved line; lines before it end at least a byte earlier
                    return int(tag[8:]) - 1
        return self._port.file_position()

    def _state_at(self, token: PauseToken):
        """The tracked state after the last line sent; sets token.filepos to where the print goes on."""
        end = self._sent_until(token)
        if end is None:
            end = 0
        shadow = self._advance_shadow(token.job, end)
        token.filepos = shadow.pos
        return shadow.tracker.state

    def _do_resume(self, token: PauseToken, source: str | None = None) -> None:
        if token is not self._token or self._state != RESUMING:
            return
        if self._port.state() == "cancelling":
            self._cancel_held(token, ask_octoprint=False)
            return
        values, profile, settings = self._current_settings(token)
        volume = Volume.from_profile(profile)
        try:
            at_park = self._render("resume_template", values, token, profile, settings, volume)
        except TemplateError as error:
            # Nothing has moved yet: stay paused and holding, and say why.
            self._refuse_resume(token, f"resume refused, the resume template failed: {error}")
            return
        warnings = []  # this resume's own
        try:
            script = self._octoprint_script("beforePrintResumed", values, token, profile, settings, volume)
        except TemplateError as error:
            script = []
            warnings.append(f"OctoPrint's beforePrintResumed script skipped: {error}")
        wait = self._needs_heat(token)

        if token.change is not None:
            # a change: load unless loaded, purge unless purged, and pull back what the return restores
            change = change_settings(values, profile)
            missing = self._change_lines(token, change, 0 if token.purged else change.purge_length)
            script = missing + filament.ready_lines(token.state, token.plan, settings) + script

        def check(lines):
            return check_resume(token.state, token.plan, volume, settings, wait_for_heat=wait, at_park=lines)

        checked = check(script + at_park)
        if checked.user and script:
            warnings.append(
                f"OctoPrint's beforePrintResumed script skipped, refused by the safety check: {checked.user[0]}"
            )
            checked = check(at_park)
        if checked.builtin:
            self._refuse_resume(token, f"resume refused by the safety check: {checked.builtin[0]}")
            return
        if checked.user:
            warnings.append(f"resume template skipped, refused by the safety check: {checked.user[0]}")
        for warning in warnings:
            self._log.warning("SafePause: %s", warning)
        token.warnings += warnings
        try:
            # OctoPrint turns Resuming now; its switch to Printing waits behind the hold, after our lines
            self._port.leave_pause(_user_of(source))
            self._send(checked.lines, TAG_RESUME)
            self._resend_saved(token)
        except RuntimeError as error:
            self._connection_lost(token, error)
            return
        except BaseException:
            self._release_hold()
            raise
        self._log.info("SafePause resumed the print (asked by %s)", source or "SafePause")
        self._emit("resumed", self._event_payload(token))  # whoever sees idle has had the event
        self._hand_back(warnings[-1] if warnings else None)
        if self._recovery is not None:
            self._recovery.hold_released()  # on disk, after the release: the print does not wait for it

    def _refuse_resume(self, token: PauseToken, message: str) -> None:
        """Stay paused and holding, and say why; OctoPrint's own Resume already turned it Resuming: back
        to Paused (it fires PrintPaused again), so no app shows a print that is not moving as resuming."""
        if self._port.state() == "resuming":
            self._enter_octoprint_pause(token)  # first: whoever sees the refusal sees OctoPrint paused
        with self._lock:
            self._set_state(PAUSED)
            self._last_error = message
        self._log.error("SafePause: %s", message)

    def _do_cancel(self, token: PauseToken, ask_octoprint: bool) -> None:
        if token is not self._token:
            return
        self._cancel_held(token, ask_octoprint)

    def _cancel_held(self, token: PauseToken, ask_octoprint: bool) -> None:
        with self._lock:
            self._set_state(CANCELLING)
        try:
            if token.pause_sent and self._holding:  # the pause lines went out: undo their modes
                _, _, settings = self._current_settings()
                self._send(mode_restore(token.state, token.plan, settings), TAG_CANCEL)
            if ask_octoprint and self._port.state() not in ("cancelling", "operational", "offline", "error"):
                # while we still hold: OctoPrint cannot stream on; its cancel script waits for release
                self._port.cancel({TAG_CANCEL})
        except RuntimeError as error:
            self._log.warning("SafePause cancel: %s", error)
        finally:
            # Disarmed only now: a line OctoPrint read while the cancel went in was saved by the still
            # armed hook; it is counted with the others and the recovery points at the first of them.
            with self._lock:
                self._armed = False
            self._correct_recovery(token)
            with self._lock:
                saved, token.saved = token.saved, []
            self._release_hold()
        if saved:
            self._log.info("SafePause dropped %d saved line(s) on cancel", len(saved))
        self._emit("cancelled", self._event_payload(token))
        self._finish(None)

    def _on_event(self, name: str, payload: dict) -> None:
        if name == "PrintStarted":
            # Only the shadow: notes of the new print's start script may already be in, while the
            # previous print's notes were dropped when it ended.
            self._shadow.drop()
            self._in_octoprint_pause = False
            self.configure()
            return
        if name == "PrintResumed":
            self._octoprint_resumed((payload or {}).get("user"))
            return
        if name == "PrinterStateChanged":
            # OctoPrint's resume marker passed the hold: its pause lines and scripts are its own again
            if self._in_octoprint_pause and self._state == IDLE and self._port.state() not in ("paused", "resuming"):
                self._in_octoprint_pause = False
            return
        token = self._token
        holding = self._state in (PAUSING, PAUSED, RESUMING)
        if name in ("PrintCancelling", "PrintCancelled") and holding:
            self._cancel_held(token, ask_octoprint=False)
        elif name == "PrintDone" and holding and not self._holding:
            # the last line went out before the pause could take hold: nothing was held or cancelled
            self._finish("the print finished before the pause took effect")
        elif name in ("PrintFailed", "PrintDone", "Disconnected", "Disconnecting", "Error") and holding:
            self._log.warning("SafePause: %s during a hold, ending it", name)
            self._correct_recovery(token)
            with self._lock:
                held = self._holding
                token.saved = []
                if name == "Disconnecting":
                    # The connection still streams until it closes: releasing now would send file lines
                    # from the park position. The count goes with the connection (or the process).
                    self._holding = False
            self._release_hold()
            self._emit("cancelled", self._event_payload(token))
            ended = "the hold ended" if held else "the pause ended before it held the print"
            self._finish(f"{ended} because of {name}")
        if name in ("PrintCancelled", "PrintFailed", "PrintDone", "Disconnected", "Error"):
            self._shadow.reset()

    # ------------------------------------------------------------------ helpers

    def _connection_lost(self, token: PauseToken, error: Exception) -> None:
        """The comm vanished under us (RuntimeError from the printer): end the pause, nothing to undo."""
        self._log.warning("SafePause: the printer connection went away during %s: %s", self._state, error)
        self._correct_recovery(token)
        with self._lock:
            token.saved = []
        self._release_hold()
        self._emit("cancelled", self._event_payload(token))
        self._finish(f"the printer connection was lost ({error})")

    def _correct_recovery(self, token: PauseToken | None) -> None:
        """A hold that ends badly: OctoPrint records a file position after the suppressed line(s), which
        never reached the printer; point the recovery at the saved line instead."""
        if self._recovery is None or token is None or token.job.origin != "local":
            return
        try:
            if token.filepos is None and token.saved:
                self._state_at(token)
            if token.filepos is None:
                return
            z = token.plan.travel_z if token.pause_sent and token.plan is not None else None
            unloaded = token.unloaded and not token.loaded
            self._recovery.correct_position(token.job.origin, token.job.path, token.filepos, z=z, unloaded=unloaded)
        except Exception:
            self._log.exception("SafePause: could not correct the recovery position")

    def _send(self, lines, tag: str) -> None:
        if lines:
            self._port.send(lines, {tag})

    def _take_hold(self) -> None:
        """Take the count claimed with _holding; never called with self._lock held (the hold mutex
        may be owned by a thread that waits for a comm lock whose holder waits for self._lock)."""
        try:
            self._port.set_hold(True)
        except Exception:
            with self._lock:
                self._holding = False
            raise

    def _release_hold(self) -> None:
        with self._lock:
            self._armed = False
            if not self._holding:
                return
            self._holding = False
        self._give_back_count()

    def _give_back_count(self) -> None:
        """Give OctoPrint back the one count of its job hold that _holding no longer claims."""
        try:
            self._port.set_hold(False)  # may run the next file line's hook on this thread
        except RuntimeError as error:
            self._log.info("SafePause: hold gone with the connection (%s)", error)
        except Exception:
            self._log.exception("SafePause: releasing the hold failed")

    def _finish(self, error: str | None) -> None:
        with self._lock:
            self._armed = False
            self._last_error = error
            self._set_state(IDLE)
            self._token = None
        if error:
            self._log.warning("SafePause: %s", error)

    def _hand_back(self, message: str | None) -> None:
        """A hold ends well: idle first, then the release, so that a scheduled stop or a pause command
        whose line comes right after the held one (even on this thread, inside the release) is taken."""
        with self._lock:
            held, self._holding = self._holding, False  # before idle: a pause armed once idle takes its own count
        self._finish(message)
        if held:
            self._give_back_count()

    def _fail(self, message: str) -> None:
        self._release_hold()
        self._finish(message)

    def _set_state(self, state: str) -> None:
        self._state = state
        self._since = time.time()

    def _event_payload(self, token: PauseToken) -> dict:
        with self._lock:
            return status.event_payload(dict(status.idle(self._since), **self._token_status(token)))

    def _current_settings(self, token: PauseToken | None = None):
        """(raw values, printer profile, validated MotionSettings); a refused value falls back to its
        default, so a bad setting can never stop a pause. For a filament change: parked at the change
        position, with the change's own hotend timeout."""
        values = self._settings() or {}
        profile = self._port.profile() or {}
        settings = MotionSettings(**motion_kwargs(values, profile))
        if token is not None and token.change is not None:
            change = change_settings(values, profile)
            park = filament.change_position(Volume.from_profile(profile), change)
            settings = replace(settings, park=park, hotend_off_after=change.hotend_off_after)
        return values, profile, settings

    # ------------------------------------------------------------------ shadow tracking

    def _advance_shadow(self, job: JobInfo, end_pos: int) -> FileFollower:
        return self._shadow.advance(job.disk_path, end_pos, lambda: self._new_shadow(job))

    def _new_shadow(self, job: JobInfo):
        """A tracker for the shadow, or (tracker, offset): a recovered print starts at an offset, and its
        state there comes from the checkpoint index instead of a replay of the prefix on this thread."""
        flavour, tools = self._flavour(), Volume.tools_of(self._port.profile())
        if self._recovery is not None:
            seeded = self._recovery.shadow_start(job.origin, job.path, flavour=flavour, tools=tools)
            if seeded is not None:
                return seeded
        return StateTracker(flavour, tools=tools)

    def _catch_up_shadow(self) -> None:
        if self._port.state() != "printing":
            return
        job = self._port.job()
        if job is None or job.origin != "local" or not job.disk_path:
            return
        pos = self._port.file_position()
        if pos is None or pos < 1:
            return
        self._skip_passed_stops(pos)
        # One byte short: the line ending at pos may be inside the hook right now and get suppressed
        # by a pause; the shadow must never contain a line that is still to be sent.
        self._advance_shadow(job, pos - 1)
        if self._recovery is not None:
            self._recovery.note_progress(job.origin, job.path, pos)


def _user_of(source: str | None) -> str | None:
    """"user:admin" -> "admin": the user OctoPrint's pause events name."""
    if source and source.startswith("user:"):
        return source[5:] or None
    return None


def _native_pause_origin(tags) -> tuple[str, str]:
    """(source, reason) of an OctoPrint pause taken over, from the tags of its M400/M114."""
    for tag in tags:
        if tag.startswith("plugin:"):
            return tag, f"OctoPrint's pause, asked by plugin {tag[7:]}"
    if "trigger:serial.action_command.pause" in tags:
        return "printer", "the printer asked to pause (//action:pause)"
    if "trigger:atcommand_pause" in tags:
        return "file", "@pause"
    if "source:api" in tags:
        return "api", "OctoPrint's pause (/api/job)"
    return "octoprint", "OctoPrint's pause"

