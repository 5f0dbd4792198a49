"""Feed a tracker the lines of a print file up to a byte position, incrementally.

Positions are counted exactly as OctoPrint's file reader counts them (utf-8-sig text, no newline
translation, `pos += len(line.encode("utf-8"))`, a BOM counted up front), so a `filepos:<n>` tag or
`getFilePosition()` maps to the same line boundary here.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class FileFollower:
    """`start`: the byte offset to read from, for a print OctoPrint started there (a recovery): its reader
    seeks to the offset and counts positions from it, and so does this. The tracker must already hold
    the state of the lines before it (fastscan.tracker_at)."""

    def __init__(self, path: str, tracker, start: int = 0):
        self.tracker = tracker
        with open(path, "rb") as raw:
            head = raw.read(len(codecs.BOM_UTF8))
        self._handle = open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115 (kept open across calls)
        if start > 0:
            self._handle.seek(start)  # as OctoPrint's PrintingGcodeFileInformation.seek: no BOM skipped
            self.pos = start
        else:
            self.pos = len(codecs.BOM_UTF8) if head == codecs.BOM_UTF8 else 0
        self._pending: tuple[str, int] | None = None  # read, but it ends beyond the last target

    def advance(self, end_pos: int, notes: Iterable[tuple[int, str]] = ()) -> int:
        """Feed every line that ends at or before `end_pos`; each note (filepos, line) goes in after
        the file lines ending at or before its filepos. Returns the position reached."""
        feed = self.tracker.feed
        for note_pos, note in notes:
            self._feed_until(min(note_pos, end_pos), feed)
            feed(note)
        self._feed_until(end_pos, feed)
        return self.pos

    def _feed_until(self, end_pos: int, feed) -> None:
        if self._handle is None:
            return
        pending = self._pending
        readline = self._handle.readline
        pos = self.pos
        while True:
            if pending is None:
                line = readline()
                if not line:
                    self.close()
                    break
                pending = (line, pos + len(line.encode("utf-8")))
            if pending[1] > end_pos:
                break
            feed(pending[0])
            pos = pending[1]
            pending = None
        self.pos = pos
        self._pending = pending

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
