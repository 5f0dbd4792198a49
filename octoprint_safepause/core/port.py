"""The narrow "printer port" the core talks to: what it needs of OctoPrint, and nothing more.

The core never touches OctoPrint directly: it gets a port. `adapter/octoprint_port.py` is the one
implementation over OctoPrint (used by the plugin and by the integration tests, over a real
`MachineCom`); the unit tests use a fake.
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
    # ~~ the running print (the controller)

    def send(self, lines: Iterable[str], tags: set) -> None:
        """Queue commands; while the job is held they go straight to the send queue, in order."""

    def set_hold(self, value: bool) -> None:
        """Take or release one count of OctoPrint's job hold. Raises RuntimeError without a connection."""

    def try_hold(self) -> bool:
        """From inside OctoPrint's queuing hook: take one count of the hold without waiting. False when
        another thread owns the hold's mutex (it may wait for the lock the hook's thread holds): then
        take it later with set_hold(True)."""

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

    def sync(self, tags: set, written) -> None:
        """Send M400 (the printer finishes its moves) and call `written()` once it was written to the
        printer, after every line sent before it; from OctoPrint's send thread, so it must not block."""

    def enter_pause(self, user: str | None) -> None:
        """Make a pause SafePause holds OctoPrint's own: its state turns Paused and it fires PrintPaused
        (for the user who asked, if any), without a script of its own (SafePause parked the head). From
        printing, or from an OctoPrint pause SafePause took over (pausing)."""

    def leave_pause(self, user: str | None) -> None:
        """OctoPrint's side of resuming a SafePause pause: its state turns Resuming and it fires
        PrintResumed, without a script of its own; Printing follows once the hold is released. Nothing
        when OctoPrint is not paused (its own Resume already ran)."""

    def pausing_commands(self) -> frozenset:
        """The G-codes OctoPrint pauses on when the print file sends them (its serial.pausingCommands)."""

    def wait_for_reader(self, timeout: float) -> bool:
        """Return once OctoPrint's job reader is not between reading a file line and queuing it: a line
        read before the hold was taken has then been through the queuing hook. False on timeout."""

    # ~~ files and recovery (the recovery service)

    def written_commands(self) -> list[str]:
        """The last commands the current (or the last closed) connection wrote to the printer, oldest
        first, as written (without line number and checksum); [] when unknown."""

    def disk_path(self, origin: str, path: str) -> str | None:
        """Where a local file lies on disk; None when it does not exist (or is not local)."""

    def recovery_data(self) -> dict | None:
        """OctoPrint's own recovery data: {origin, path, pos, date} or None."""

    def save_recovery_data(self, origin: str, path: str, pos: int) -> None:
        """Overwrite OctoPrint's recovery data (its date becomes now)."""

    def delete_recovery_data(self) -> None:
        """Forget OctoPrint's recovery data."""

    def start_print(self, origin: str, path: str, offset: int, tags: set) -> str:
        """Select the file (if another is selected) and start printing it at byte `offset`, as OctoPrint's
        own "start" does (its beforePrintStarted script, events). Returns the state right after, e.g.
        "starting" or "printing"; RuntimeError when OctoPrint could not select the file."""

    def time_left(self) -> float | None:
        """OctoPrint's estimate of the running print's time left, in seconds, or None."""

    def file_stops(self, path: str) -> list:
        """The scheduled stops kept in a local file's metadata ([] when none)."""

    def save_file_stops(self, path: str, stops: list) -> None:
        """Keep `stops` in a local file's metadata (an empty list removes them)."""

    def script(self, name: str) -> str:
        """The text of one of the user's OctoPrint G-code scripts, e.g. "beforePrintStarted"."""
