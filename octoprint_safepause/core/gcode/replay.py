"""Rebuild the tracked state at a byte position of a print file, the way OctoPrint read it.

OctoPrint (util/comm.py, PrintingGcodeFileInformation) opens the file with
``open(path, encoding="utf-8-sig", errors="replace", newline="")``, starts ``pos`` at the BOM's length
(get_bom), and after each ``readline()`` adds ``len(line.encode("utf-8"))``. With ``newline=""`` a line
ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``.

This module reads the same lines in 1 MiB binary chunks instead, and the positions agree:

* ``bytes.splitlines`` breaks at exactly ``\\n``, ``\\r\\n`` and ``\\r`` (str.splitlines would also break
  at ``\\x0b``, ``\\x1c``, ``\\u2028`` ... which readline does not).
* A chunk that decodes as strict UTF-8 re-encodes to the same bytes, so a line's length in bytes is
  OctoPrint's ``len(line.encode("utf-8"))``. Where it does not, each line is decoded on its own with
  ``errors="replace"``: the newline bytes are ASCII and end any broken sequence, so the replacement
  characters per line are the ones the stream decoder produced, and the position uses their length.
* The BOM is skipped and counted, as OctoPrint counts it.

Lines that end inside the range are fed without computing each line's position; positions are only
computed in the chunk where the range (or a note) ends. Memory is one chunk plus the longest line.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Iterator, Sequence

from .state import StateTracker

__all__ = ["replay_file", "CHUNK_SIZE"]

CHUNK_SIZE = 1 << 20
_BOM = codecs.BOM_UTF8


def _split_text(text: str) -> list:
    """Lines of `text` (which ends with a line break), without their breaks."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    lines.pop()  # the empty string after the final break
    return lines


def decoded_lines(region: bytes):
    """[(text, length the way OctoPrint counts it)] for the complete lines of `region`."""
    out = []
    for raw in region.splitlines(True):
        try:
            out.append((raw.decode("utf-8"), len(raw)))
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            out.append((text, len(text.encode("utf-8"))))
    return out


def regions(fh, start: int, chunk: int) -> Iterator[tuple[int, bytes, bool]]:
    """(byte offset, bytes, eof) of consecutive runs of whole lines from the byte offset `start` (a line
    boundary); a BOM at the file start is skipped (OctoPrint counts its 3 bytes, so both positions are 3)."""
    pos = start
    fh.seek(start)
    if start == 0:
        head = fh.read(len(_BOM))
        if head == _BOM:
            pos = len(_BOM)
            carry = b""
        else:
            carry = head
    else:
        carry = b""
    while True:
        data = fh.read(chunk)
        if data:
            data = carry + data
            # keep a trailing "\r" back: a "\n" may follow in the next chunk
            cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1))
            if cut < 0:
                carry = data
                continue
            region, carry = data[: cut + 1], data[cut + 1 :]
            yield pos, region, False
            pos += len(region)
        else:
            if carry:
                yield pos, carry, True
            return



def replay_file(
    path,
    end_pos: int,
    flavour: str = "marlin",
    notes: Sequence[tuple[int, str]] = (),
    tracker: StateTracker | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> StateTracker:
    """Feed `tracker` (a new one of `flavour` if None) every line of `path` whose end position is at
    most `end_pos`, stopping before the first line that ends after it.

    `notes` are (filepos, raw_line) pairs for commands that reached the printer from elsewhere while
    the file stood at filepos: each is fed after all file lines ending at or before its filepos and
    before the later ones, in the given order. Notes beyond `end_pos` are not fed (they came after the
    state asked for). Returns the tracker.
    """
    t = tracker if tracker is not None else StateTracker(flavour)
    feed = t.feed
    pending = sorted(
        ((int(p), line) for p, line in notes if int(p) <= end_pos), key=lambda n: n[0]
    )  # sorted() is stable: notes at one position keep their order
    pending_q = deque(pending)

    def flush_notes(upto: int) -> None:
        while pending_q and pending_q[0][0] <= upto:
            feed(pending_q.popleft()[1])

    with open(path, "rb") as fh:
        pos = None  # OctoPrint's count: the byte offset until a line with invalid UTF-8 comes by
        for offset, region, eof in regions(fh, 0, chunk_size):
            if pos is None:
                pos = offset  # 3 after a BOM, as OctoPrint counts it
                flush_notes(pos)
            if pos > end_pos:
                break
            stop = min(end_pos, pending_q[0][0]) if pending_q else end_pos
            if pos + len(region) <= stop and not eof:
                try:
                    text = region.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                if text is not None:
                    # every line of this region ends at or before `stop`: no positions needed
                    deque(map(feed, _split_text(text)), maxlen=0)
                    pos += len(region)
                    flush_notes(pos)
                    continue
            for text, length in decoded_lines(region):
                end = pos + length
                if end > end_pos:
                    flush_notes(end_pos)
                    return t
                flush_notes(end - 1)  # notes that went out while this line was still unread
                feed(text)
                pos = end
            flush_notes(pos)
    flush_notes(end_pos)
    return t
