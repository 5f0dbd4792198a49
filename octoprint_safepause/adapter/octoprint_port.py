"""The one OctoPrint adapter: `PrinterPort` over OctoPrint's printer, file manager and profiles.

Duck-typed (it imports nothing from OctoPrint, so the unit tests can hand it fakes); what it calls is
OctoPrint 1.11's `PrinterInterface`, `FileManager` and `PrinterProfileManager`, plus what only
`MachineCom` has (its job lock, the reader's file position, its sent-line history, its pause states and
its pausing commands), used here and nowhere else. The user's
G-code scripts come through `load_script` (OctoPrint's `settings().loadScript`).
"""

from __future__ import annotations

import re

from ..core.port import JobInfo


def wait_for_job_reader(comm, timeout: float) -> bool:
    """MachineCom reads a file line and runs the queuing phase for it under its job lock (comm.py
    `_send_from_job`), and reads nothing more once the job is held: the lock free means no line is in
    between. Private to MachineCom, so used only here, behind the port."""
    lock = getattr(comm, "_jobLock", None)
    if lock is None or not lock.acquire(timeout=timeout):
        return lock is None
    lock.release()
    return True


_STATE_IDS = {
    "OFFLINE": "offline",
    "OPEN_SERIAL": "offline",
    "DETECT_SERIAL": "offline",
    "CONNECTING": "offline",
    "CLOSED": "offline",
    "CLOSED_WITH_ERROR": "error",
    "ERROR": "error",
    "OPERATIONAL": "operational",
    "STARTING": "starting",
    "PRINTING": "printing",
    "PAUSING": "pausing",
    "PAUSED": "paused",
    "RESUMING": "resuming",
    "CANCELLING": "cancelling",
    "FINISHING": "finishing",
    "TRANSFERING_FILE": "operational",
}


def state_from_id(state_id: str | None) -> str:
    return _STATE_IDS.get(state_id or "OFFLINE", "offline")


class OctoPrintPort:
    """PrinterPort over OctoPrint's `PrinterInterface` and file manager."""

    def __init__(self, printer, file_manager, profile_manager, load_script=None):
        # OctoPrint hands plugins a proxy that wraps every method call to add the plugin's tags (tens of
        # µs each): commands go through it, the frequent reads go to the printer itself.
        self._printer = printer
        self._raw = getattr(printer, "__wrapped__", printer)
        self._job_cache: tuple | None = None  # (MachineCom's current file object, JobInfo)
        self._files = file_manager
        self._profiles = profile_manager
        self._load_script = load_script
        self._last_comm = None  # the connection seen last: its history outlives its close

    def send(self, lines, tags):
        self._connected()
        self._printer.commands(list(lines), tags=set(tags))

    def set_hold(self, value):
        self._raw.set_job_on_hold(value)

    def try_hold(self):
        return self._raw.set_job_on_hold(True, blocking=False) is not False

    def state(self):
        # MachineCom.getStateId() searches its class for the name at every call (~70 µs); the pause and
        # resume paths ask often: the same names, looked up in a table made once per class
        comm = getattr(self._raw, "_comm", _NO_COMM)
        if comm is None:
            return "offline"
        if comm is _NO_COMM:  # not OctoPrint's Printer: ask it the documented way
            return state_from_id(self._raw.get_state_id())
        table = _STATE_NAMES.get(type(comm))
        if table is None:
            table = _STATE_NAMES[type(comm)] = {
                value: name[len("STATE_") :] for name, value in vars(type(comm)).items() if name.startswith("STATE_")
            }
        name = table.get(getattr(comm, "_state", None))
        return state_from_id(name) if name else state_from_id(self._raw.get_state_id())

    def job(self):
        # Asked at every pause request: the lookup through OctoPrint's state and file manager costs
        # ~0.7 ms while printing, so it is kept for as long as MachineCom has the same file selected.
        current = getattr(getattr(self._raw, "_comm", None), "_currentFile", None)
        cached = self._job_cache
        if current is not None and cached is not None and cached[0] is current:
            return cached[1]
        file = (self._raw.get_current_job() or {}).get("file") or {}
        origin, path = file.get("origin"), file.get("path")
        if not origin or not path:
            return None
        disk_path = self.disk_path(origin, path) if origin == "local" else None
        info = JobInfo(origin, path, disk_path, file.get("name") or path, file.get("size"))
        self._job_cache = (current, info) if current is not None else None
        return info

    def temperatures(self):
        return self._raw.get_current_temperatures() or {}

    def file_position(self):
        # the reader's own position: Printer's progress data is only refreshed when it is next published
        comm = getattr(self._raw, "_comm", None)
        if comm is not None:
            self._last_comm = comm
        try:
            position = comm.getFilePosition() if comm is not None else None
        except Exception:
            return None
        return position["pos"] if position else None

    def cancel(self, tags):
        self._connected()
        self._printer.cancel_print(tags=set(tags))

    def _connected(self):
        # Printer.commands and cancel_print do nothing without a connection; the core must know
        if self.state() in ("offline", "error"):
            raise RuntimeError("No connection to the printer")

    def profile(self):
        return self._profiles.get_current_or_default() or {}

    def sync(self, tags, written):
        self._connected()
        # MachineCom's own: Printer.commands() takes no callback (the tags the plugin proxy would add
        # are added here)
        self._comm().sendCommand("M400", tags=set(tags) | PLUGIN_TAGS, on_sent=written)

    def enter_pause(self, user):
        comm = self._comm()
        with comm._jobLock:
            if comm._state in (comm.STATE_PRINTING, comm.STATE_STARTING, comm.STATE_RESUMING):
                # without local handling: no M400/M114 round trip and no afterPrintPaused script
                comm.setPause(True, local_handling=False, user=user, tags=set(PLUGIN_TAGS))
            elif comm._state == comm.STATE_PAUSING:
                # OctoPrint's own pause, taken over before its M400 went out: finish it as setPause would
                comm._pause_preparation_done(check_timer=False, suppress_script=True, user=user)
            # setPause leaves the switch to Paused to a marker in the job queue, which the hold blocks
            if comm._state == comm.STATE_PAUSING:
                comm._changeState(comm.STATE_PAUSED)

    def leave_pause(self, user):
        comm = self._comm()
        with comm._jobLock:
            if comm._state in (comm.STATE_PAUSED, comm.STATE_PAUSING):
                # its Printing marker waits behind the hold, so no file line goes before SafePause's own
                comm.setPause(False, local_handling=False, user=user, tags=set(PLUGIN_TAGS))

    def pausing_commands(self):
        comm = getattr(self._raw, "_comm", None)
        codes = getattr(comm, "_pausing_commands", None)
        return frozenset(codes) if isinstance(codes, (list, tuple, set, frozenset)) else DEFAULT_PAUSING_COMMANDS

    def _comm(self):
        comm = getattr(self._raw, "_comm", None)
        if comm is None:
            raise RuntimeError("No connection to the printer")
        return comm

    def wait_for_reader(self, timeout):
        return wait_for_job_reader(getattr(self._raw, "_comm", None), timeout)

    def written_commands(self):
        # MachineCom keeps the last numbered lines it sends (for resends), adding each *before* writing
        # it; Printer drops its comm when the connection closes, so the one seen last is asked.
        comm = getattr(self._raw, "_comm", None) or self._last_comm
        try:
            history = list(getattr(comm, "_lastLines", None) or ())
            unwritten = _first_unwritten(list(getattr(comm, "_terminal_log", None) or ()))
            if unwritten is not None:
                # that line and any after it never reached the port (a write that failed, or the port
                # already gone: MachineCom then returns without writing, or logging "Send:")
                count = int(comm._current_line) - unwritten
                history = history[: len(history) - count] if 0 < count <= len(history) else history
        except Exception:
            return []
        return [line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line) for line in history]

    def disk_path(self, origin, path):
        try:
            if origin != "local" or not self._files.file_exists(origin, path):
                return None
            return self._files.path_on_disk(origin, path)
        except Exception:
            return None

    def recovery_data(self):
        return self._files.get_recovery_data()

    def save_recovery_data(self, origin, path, pos):
        self._files.save_recovery_data(origin, path, pos)

    def delete_recovery_data(self):
        self._files.delete_recovery_data()

    def start_print(self, origin, path, offset, tags):
        def selected():
            file = (self._raw.get_current_job() or {}).get("file") or {}
            return (file.get("origin"), file.get("path")) == (origin, path)

        if not selected():
            self._printer.select_file(path, origin != "local", printAfterSelect=False)
            if not selected():
                raise RuntimeError("OctoPrint could not select the file")
        self._printer.start_print(pos=offset, tags=set(tags))
        return self.state()

    def script(self, name):
        return (self._load_script(name) if self._load_script else None) or ""

    def time_left(self):
        try:
            left = ((self._raw.get_current_data() or {}).get("progress") or {}).get("printTimeLeft")
        except Exception:
            return None
        return float(left) if isinstance(left, (int, float)) and left >= 0 else None

    def file_stops(self, path):
        metadata = self._files.get_metadata("local", path) or {}
        stops = metadata.get(STOPS_METADATA_KEY)
        return stops if isinstance(stops, list) else []

    def save_file_stops(self, path, stops):
        if stops:
            self._files.set_additional_metadata("local", path, STOPS_METADATA_KEY, list(stops), overwrite=True)
        else:
            self._files.remove_additional_metadata("local", path, STOPS_METADATA_KEY)


STOPS_METADATA_KEY = "safepause_stops"  # a file's scheduled stops, in OctoPrint's .metadata.json
# what OctoPrint's plugin proxy adds to a call of ours (MachineCom then logs "on behalf of plugin")
PLUGIN_TAGS = frozenset(["source:plugin", "plugin:safepause"])
DEFAULT_PAUSING_COMMANDS = frozenset(["M0", "M1", "M25"])  # OctoPrint's serial.pausingCommands default
_NO_COMM = object()
_STATE_NAMES: dict = {}  # MachineCom class -> {state value: state id}
_SENT = re.compile(r"^Send: N(\d+) ")
# MachineCom's messages when a write times out or fails ("trying again" is followed by the error only
# while the connection is not already closing from its read side)
_WRITE_FAILED = (
    "Serial timeout while writing to serial port",
    "Unexpected error while writing to serial port",
    "Could not write anything to the serial port",
)


def _first_unwritten(terminal: list) -> int | None:
    """The number of the first numbered line that was not written, from MachineCom's terminal log (its
    last messages; every numbered line is logged as "Send: N<n> ..." right before its write): the last
    logged one when a write error follows it with nothing from the printer after, else the one after
    it. None when nothing was logged (the history cannot be checked)."""
    number, failed = None, False
    for message in map(str, terminal):
        match = _SENT.match(message)
        if match:
            number, failed = int(match.group(1)), False
        elif number is not None and message.startswith(_WRITE_FAILED):
            failed = True
        elif message.startswith("Recv:"):
            failed = False  # the printer answered after it: the retry went through
    if number is None:
        return None
    return number if failed else number + 1
