"""The one OctoPrint adapter: `PrinterPort` over OctoPrint's printer, file manager and profiles.

Duck-typed (it imports nothing from OctoPrint, so the unit tests can hand it fakes); what it calls is
OctoPrint 1.11's `PrinterInterface`, `FileManager` and `PrinterProfileManager`.
"""

from __future__ import annotations

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
