"""Which file lines reached the printer, from what the connection last wrote.

OctoPrint's recovery position is what its file reader had *read*; a line or two more may have been read
and queued but never written to the serial port. With the printer still powered, the firmware finishes
what it received, so the nozzle stands where the last *written* file line left it. OctoPrint keeps the
last commands it wrote (``MachineCom._lastLines``, for resends: the final text, after comments were
stripped and every hook ran). Matching the file's last lines before the read position against them
tells how many were read but not written, at no cost while printing: it is done once, when the print
has died.

The last file line written is the latest one that matches the latest written command equal to it,
with the ``CONTEXT`` file lines before it written before it, in order, and no file line up to it
written after it (other commands, such as temperature polls, may come between). Where nothing matches
(a plugin rewrote the lines, a line too long ago), the answer is None: unknown.
"""

from __future__ import annotations

from ..gcode.line import strip_comment

CONTEXT = 4  # file lines before the last written one that must also be found, in order
LOOKBACK = 64  # file lines before the read position considered
_TAIL_BYTES = 64 * 1024
_MAX_BACK = 4 * 1024 * 1024  # no further back than this
# OctoPrint applies the temperature offsets to these before sending: compare their command word only
_OFFSET_COMMANDS = ("M104", "M109", "M140", "M190")


def file_lines_before(disk: str, end_offset: int, count: int = LOOKBACK) -> list[tuple[str, int]]:
    """The lines of the file before the byte `end_offset` (a line boundary), oldest first, back to the
    `count`-th one OctoPrint sends (comments and empty lines count for nothing; a slicer's closing
    settings block can be thousands of them): (the text OctoPrint sends, or "" for none; the line's
    length as OctoPrint counts it)."""
    out: list[tuple[str, int]] = []
    sent = 0
    end = end_offset
    with open(disk, "rb") as fh:
        while end > 0 and sent < count and end_offset - end < _MAX_BACK:
            start = max(0, end - _TAIL_BYTES)
            fh.seek(start)
            raw_lines = fh.read(end - start).splitlines(True)
            if start > 0 and len(raw_lines) > 1:
                first = raw_lines.pop(0)  # may have begun before the window: read again next round
                start += len(first)
            block = []
            for raw in raw_lines:
                text = raw.decode("utf-8", "replace")
                block.append((strip_comment(text).strip(), len(text.encode("utf-8"))))
            out[:0] = block
            sent += sum(1 for text, _ in block if text)
            if start == end:
                break  # one line longer than the window: give up there
            end = start
    while sent > count and out:
        text, _ = out.pop(0)
        sent -= bool(text)
    return out


def _same(file_text: str, written: str) -> bool:
    if file_text == written:
        return True
    word = file_text.split(" ", 1)[0]
    return word in _OFFSET_COMMANDS and written.split(" ", 1)[0] == word


def unsent_bytes(lines: list[tuple[str, int]], written: list[str]) -> int | None:
    """How many bytes (OctoPrint's count) at the end of `lines` (file_lines_before) were read but never
    written, given `written` (the last commands written, oldest first); None when it cannot be told."""
    sent = [i for i, (text, _) in enumerate(lines) if text]
    if not sent or not written:
        return None
    for k in range(len(sent) - 1, -1, -1):
        candidate = sent[k]
        # the latest written command equal to the candidate line, then its context before that
        at = _last_match(lines[candidate][0], written, len(written))
        if at is not None:
            # Written after the last file line: only other commands (polls, the terminal). A file line
            # up to the candidate written after its match: that match was an older copy (a layer that
            # repeats the one below, a retraction).
            earlier = {lines[i][0] for i in sent[: k + 1]}
            if any(_same(text, w) for w in written[at + 1 :] for text in earlier):
                continue
        t = at
        for i in reversed(sent[max(0, k - CONTEXT) : k]):
            if t is None:
                break
            t = _last_match(lines[i][0], written, t)
        if at is not None and t is not None:
            return sum(length for _, length in lines[candidate + 1 :])
    return None


def _last_match(text: str, written: list[str], before: int) -> int | None:
    return next((t for t in range(before - 1, -1, -1) if _same(text, written[t])), None)
