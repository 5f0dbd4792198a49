"""The narrow "printer port" the controller talks to.

The controller never touches OctoPrint directly: it gets a port. `OctoPrintPort` adapts OctoPrint's
printer and file manager (duck-typed, so this module imports nothing from OctoPrint); the integration
tests adapt a bare `MachineCom` the same way, and the unit tests use a fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JobInfo:
    origin: str  # "local" or "sdcard"
    path: str  # OctoPrint's storage path, e.g. "folder/part.gcode"
    disk_path: str | None  # where the file lies on disk (None for SD prints)
    name: str
    size: int | None


class PrinterPort(Protocol):
    def send(self, lines: Iterable[str], tags: set) -> None:
        """Queue commands; while the job is held they go straight to the send queue, in order."""

    def set_hold(self, value: bool) -> None:
        """Take or release one count of OctoPrint's job hold. Raises RuntimeError without a connection."""

    def state(self) -> str:
        """One of: offline, operational, starting, printing, pausing, paused, resuming, cancelling,
        finishing, error."""

    def job(self) -> JobInfo | None:
        """The file being printed, or None."""

    def temperatures(self) -> dict:
        """OctoPrint's current readings: {"tool0": {"actual": .., "target": ..}, "bed": {...}}."""

    def file_position(self) -> int | None:
        """Byte offset after the last line OctoPrint read from the print file, or None."""

    def cancel(self, tags: set) -> None:
        """Ask OctoPrint to cancel the print the usual way (its cancel script, events, recovery data)."""

    def profile(self) -> dict:
        """The current printer profile as a dict (volume, extruder count, heated bed...)."""

    def wait_for_reader(self, timeout: float) -> bool:
        """Return once OctoPrint's job reader is not between reading a file line and queuing it: a line
        read before the hold was taken has then been through the queuing hook. False on timeout."""


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

    def __init__(self, printer, file_manager, profile_manager):
        self._printer = printer
        self._files = file_manager
        self._profiles = profile_manager

    def send(self, lines, tags):
        self._printer.commands(list(lines), tags=set(tags))

    def set_hold(self, value):
        self._printer.set_job_on_hold(value)

    def state(self):
        return state_from_id(self._printer.get_state_id())

    def job(self):
        current = self._printer.get_current_job() or {}
        file = current.get("file") or {}
        origin, path = file.get("origin"), file.get("path")
        if not origin or not path:
            return None
        disk_path = None
        if origin == "local":
            try:
                disk_path = self._files.path_on_disk(origin, path)
            except Exception:
                disk_path = None
        return JobInfo(origin, path, disk_path, file.get("name") or path, file.get("size"))

    def temperatures(self):
        return self._printer.get_current_temperatures() or {}

    def file_position(self):
        progress = self._printer.get_current_data().get("progress") or {}
        return progress.get("filepos")

    def cancel(self, tags):
        self._printer.cancel_print(tags=set(tags))

    def profile(self):
        return self._profiles.get_current_or_default() or {}

    def wait_for_reader(self, timeout):
        return wait_for_job_reader(getattr(self._printer, "_comm", None), timeout)
