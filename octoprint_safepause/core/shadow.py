"""The controller's shadow tracker: the printer state, kept a little behind the printer, off the hot path.

The queuing hook does not track state per line (that would cost about 3x a no-op hook). Instead the
controller thread feeds this a catch-up once a second: the print file, read exactly as OctoPrint reads
it, up to a byte position, merged with the few commands from outside the file (terminal, jog and
temperature buttons) that the hook noted with the file position at which they went out. At a pause only
the lines since the last catch-up are read.

Threads: `note` is called from OctoPrint's comm threads (inside the hook, with comm locks held): it only
appends under a short lock of its own. Everything else runs on the controller thread.
"""

from __future__ import annotations

import threading
from typing import Callable

from .gcode import StateTracker
from .gcode.follower import FileFollower

MAX_NOTES = 10000  # commands from outside the file kept per print; more are dropped (and said so)


class Shadow:
    def __init__(self):
        self._lock = threading.Lock()
        self._notes: list[tuple[int, str]] = []  # (file position when it went out, line), whole print
        self._used = 0  # notes already fed to the follower
        self.dropped = False  # more than MAX_NOTES: the tracked state may miss some
        self._follower: FileFollower | None = None
        self._path: str | None = None

    def note(self, pos: int, line: str) -> None:
        """A command from outside the file went out at file position `pos` (any thread)."""
        with self._lock:
            if len(self._notes) >= MAX_NOTES:
                self.dropped = True
                return
            self._notes.append((pos, line))

    def advance(self, path: str, end_pos: int, new_tracker: Callable[[], StateTracker | tuple]) -> FileFollower:
        """The follower of `path` fed up to `end_pos` (notes included); a new one, from `new_tracker()`
        (a tracker, or (tracker, the byte offset it stands at)), when the file changed or the position
        went back."""
        follower = self._follower
        if follower is None or self._path != path or follower.pos > end_pos:
            if follower is not None:
                follower.close()
            made = new_tracker()
            tracker, start = made if isinstance(made, tuple) else (made, 0)
            follower = self._follower = FileFollower(path, tracker, start=start)
            self._path = path
            self._used = 0
        with self._lock:
            stop = self._used
            while stop < len(self._notes) and self._notes[stop][0] <= end_pos:
                stop += 1
            notes = self._notes[self._used : stop]
            self._used = stop
        follower.advance(end_pos, notes)
        return follower

    def drop(self) -> None:
        """Forget the follower, keep the notes (a new print's start script may already be noted)."""
        if self._follower is not None:
            self._follower.close()
        self._follower = None
        self._path = None
        self._used = 0

    def reset(self) -> None:
        """A print ended: forget everything."""
        with self._lock:
            self._notes = []
            self.dropped = False
        self.drop()
