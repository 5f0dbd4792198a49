"""Which file lines reached the printer, told from the last commands written, on every corpus file.

The truth is built the way OctoPrint sends a file: the lines it reads, comments stripped, empty ones
skipped; a few of the last ones read are held back as never written; temperature polls, a terminal
command and OctoPrint's own M110 come between; only the last 50 commands are kept (its resend buffer).
"""

from __future__ import annotations

import random

import pytest
from octoprint.util.comm import process_gcode_line

from octoprint_safepause.core.recovery.delivered import file_lines_before, unsent_bytes
from tests.corpus import corpus_files

HISTORY = 50  # OctoPrint's default resend buffer (serial.resendRatioThreshold aside)


def _lines_with_ends(path) -> list[tuple[str | None, int]]:
    """(what OctoPrint sends for the line or None, the position after it), for the whole file."""
    out, pos = [], 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        for line in iter(fh.readline, ""):
            pos += len(line.encode("utf-8"))
            out.append((process_gcode_line(line), pos))
    return out


@pytest.mark.parametrize(("path", "flavour"), corpus_files(), ids=lambda v: getattr(v, "name", v))
def test_the_unsent_lines_are_found_exactly(path, flavour):
    lines = _lines_with_ends(path)
    bom = 3 if path.read_bytes()[:3] == b"\xef\xbb\xbf" else 0
    rng = random.Random(path.name)
    checked = 0
    for _ in range(60):
        read = rng.randrange(200, len(lines))  # lines read: lines[:read]
        sent_idx = [i for i in range(read) if lines[i][0]]
        unsent = rng.choice((0, 0, 1, 1, 2, 3))
        if len(sent_idx) <= unsent + 8:
            continue
        last_written = sent_idx[-1 - unsent]
        written = []
        for i in sent_idx:
            if i > last_written:
                break
            written.append(lines[i][0])
            if rng.random() < 0.1:
                written.append(rng.choice(("M105", "M105", "M114", "M110 N0")))
        written = written[-HISTORY:]
        read_pos = lines[read - 1][1] + bom  # OctoPrint counts a BOM: its positions are byte offsets
        window = file_lines_before(str(path), read_pos)
        expected = read_pos - (lines[last_written][1] + bom)
        assert unsent_bytes(window, written) == expected, (path.name, read, unsent)
        checked += 1
    assert checked >= 40


def test_unknown_when_the_written_lines_are_not_the_files():
    window = [("G1 X1 Y1 E1", 12), ("G1 X2 Y2 E2", 12), ("; comment", 0), ("G1 X3 Y3 E3", 12)]
    window = [(text if not text.startswith(";") else "", n) for text, n in window]
    assert unsent_bytes(window, []) is None
    assert unsent_bytes(window, ["G1 X1 Y1 E1.1", "G1 X2 Y2 E2.2"]) is None  # a plugin rewrote them


def test_a_repeated_line_is_not_taken_for_the_written_one():
    # the last line read repeats one written earlier: its context tells that it was not written
    window = [(t, 10) for t in ("G1 E-0.8", "G1 X1 Y1", "G1 E0.8", "G1 X2 Y2 E1", "G1 X3 Y3 E2", "G1 E-0.8")]
    written = ["G1 E-0.8", "G1 X1 Y1", "G1 E0.8", "M105", "G1 X2 Y2 E1", "G1 X3 Y3 E2"]
    assert unsent_bytes(window, written) == 10
    assert unsent_bytes(window, [*written, "G1 E-0.8"]) == 0
