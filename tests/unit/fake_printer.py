"""A stand-in for OctoPrint's comm layer at the edge the controller unit tests own.

It reproduces the few behaviours the controller relies on (verified against the real thing in
tests/integration): file lines are read with OctoPrint's position counting and tags and pass the
queuing hook before they go out; a job hold stops reading; commands sent while held go straight out,
in order. The real `MachineCom` is exercised by the integration tests.
"""

from __future__ import annotations

import threading

from octoprint.util.comm import gcode_and_subcode_for_cmd  # what OctoPrint passes the hook as `gcode`

from octoprint_safepause.core.port import JobInfo


class FakeComm:
    def __init__(self, path: str, controller):
        self.path = path
        self.controller = controller
        self.hold = 0
        self.pos = 0
        self.fileline = 0
        self.wire: list[tuple[str, set]] = []  # what reached the printer, in order
        self.lock = threading.RLock()
        self._handle = open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115 (kept open across calls)
        self.done = False

    # the MachineCom surface FakePort uses
    def set_job_on_hold(self, value: bool, blocking: bool = True) -> bool:
        with self.lock:
            self.hold = self.hold + 1 if value else max(0, self.hold - 1)
        return True

    def stream(self, max_lines: int | None = None) -> int:
        """Send file lines until the hold stops us (or max_lines / EOF); returns lines sent."""
        sent = 0
        while max_lines is None or sent < max_lines:
            with self.lock:
                if self.hold or self.done:
                    break
                line = self._next_line()
                if line is None:
                    self.done = True
                    break
                tags = {"source:file", f"filepos:{self.pos}", f"fileline:{self.fileline}"}
                gcode, _subcode = gcode_and_subcode_for_cmd(line)
                result = self.controller.on_queuing(self, "queuing", line, None, gcode, tags=tags)
                if result is None:
                    self.wire.append((line, tags))
                    sent += 1
        return sent

    def _next_line(self) -> str | None:
        while True:
            raw = self._handle.readline()
            if not raw:
                return None
            self.pos += len(raw.encode("utf-8"))
            stripped = raw.split(";", 1)[0].strip()
            if stripped:
                self.fileline += 1
                return stripped

    def command(self, line: str, tags: set) -> None:
        """A non-file command (terminal, jog) as OctoPrint queues it."""
        gcode, _subcode = gcode_and_subcode_for_cmd(line)  # None for Klipper's extended commands, as OctoPrint
        if self.controller.on_queuing(self, "queuing", line, None, gcode, tags=tags) is None:
            self.wire.append((line, tags))


class FakePort:
    """PrinterPort over FakeComm."""

    def __init__(self, comm: FakeComm, profile: dict | None = None, origin: str = "local"):
        self.comm = comm
        self.printer_state = "printing"
        self.origin = origin
        self.cancelled = False
        self.hold_raises = False
        self.temps = {}
        self.pause_calls: list = []
        self.scripts: dict = {}
        self._profile = profile or {"volume": {"width": 200, "depth": 200, "height": 200}}

    def send(self, lines, tags):
        for line in lines:
            self.comm.command(line, set(tags))

    def set_hold(self, value):
        if self.hold_raises:
            raise RuntimeError("No connection to the printer")
        self.comm.set_job_on_hold(value)
        if not value and not self.comm.hold and self.printer_state == "resuming":
            self.printer_state = "printing"  # OctoPrint's resume marker waited behind the hold

    def sync(self, tags, written):
        self.comm.command("M400", set(tags))
        written()

    # OctoPrint's pause states as MachineCom goes through them for SafePause (checked in tests/integration)
    def enter_pause(self, user):
        self.pause_calls.append(("enter", user))
        if self.printer_state in ("printing", "pausing", "resuming"):
            self.printer_state = "paused"

    def leave_pause(self, user):
        self.pause_calls.append(("leave", user))
        if self.printer_state in ("paused", "pausing"):
            self.printer_state = "resuming"

    def pausing_commands(self):
        return frozenset(["M0", "M1", "M25"])

    def script(self, name):
        return self.scripts.get(name, "")

    def try_hold(self):
        return self.comm.set_job_on_hold(True, blocking=False)

    def state(self):
        return self.printer_state

    def job(self):
        return JobInfo(self.origin, "part.gcode", self.comm.path, "part.gcode", None)

    def file_position(self):
        return self.comm.pos

    def temperatures(self):
        return self.temps

    def cancel(self, tags):
        self.cancelled = True
        self.printer_state = "cancelling"

    def profile(self):
        return self._profile

    def wait_for_reader(self, timeout):
        return True  # FakeComm reads and hooks a line in one call on the caller's thread

    def time_left(self):
        return None

    def file_stops(self, path):
        return list(getattr(self, "stored_stops", {}).get(path, []))

    def save_file_stops(self, path, stops):
        if not hasattr(self, "stored_stops"):
            self.stored_stops = {}
        self.stored_stops[path] = list(stops)
