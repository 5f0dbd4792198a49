"""replay_file equals feeding OctoPrint's lines one by one up to a position, notes interleaved."""

from __future__ import annotations

import codecs

import pytest

from octoprint_safepause.core.gcode import StateTracker, replay_file

from .independent_model import corpus_files, read_lines

FILES = corpus_files()


def octoprint_lines(path):
    """(line, end position) exactly as OctoPrint's PrintingGcodeFileInformation counts them."""
    with open(path, "rb") as fh:
        bom = fh.read(3) == codecs.BOM_UTF8
    pos = 3 if bom else 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        while True:
            line = fh.readline()
            if not line:
                return
            pos += len(line.encode("utf-8"))
            yield line, pos


def reference(path, end_pos, flavour="marlin", notes=()):
    t = StateTracker(flavour)
    pending = sorted([n for n in notes if n[0] <= end_pos], key=lambda n: n[0])
    for line, end in octoprint_lines(path):
        if end > end_pos:
            break
        while pending and pending[0][0] < end:
            t.feed(pending.pop(0)[1])
        t.feed(line)
    for _, note in pending:
        t.feed(note)
    return t.state


@pytest.mark.parametrize("path,flavour", FILES, ids=[p.name[:2] for p, _ in FILES])
def test_replay_matches_line_by_line_on_the_corpus(path, flavour):
    ends = [end for _, end in octoprint_lines(path)]
    size = ends[-1]
    # the start, inside the first line, line ends and the middle of lines early on (cheap), the middle
    # of the file and its end (one byte before the end and beyond it are covered on the small files)
    cuts = sorted({0, 1, ends[0] - 1, ends[0], ends[1], ends[40] + 3, ends[500], size // 2, size})
    t = StateTracker(flavour)
    lines = read_lines(path)
    want = {}
    i = 0
    for cut in cuts:
        while i < len(lines) and ends[i] <= cut:
            t.feed(lines[i])
            i += 1
        want[cut] = t.state
    for cut in cuts:
        got = replay_file(path, cut, flavour).state
        assert got == want[cut], (path.name, cut)
    if size < 400_000:
        assert replay_file(path, size - 1, flavour).state == reference(path, size - 1, flavour)
        assert replay_file(path, size + 10, flavour).state == want[size]
    # small chunks put line ends and CRs at chunk borders
    for cut in (ends[300] - 2, ends[1200]):
        expected = reference(path, cut, flavour)
        assert replay_file(path, cut, flavour, chunk_size=97).state == expected


def _tricky_file(tmp_path, crlf=True, bom=True):
    body = [
        "; généré par un trancheur — ümlauts, 日本語, emoji \U0001f600",
        "G21",
        "G90",
        "M83",
        "G28",
        "G1 Z0.3 F3000 ; première couche",
        "G1 X10 Y10 E1.5",
        "G1 X20 Y10 E-0.8 ; rétraction",
        "G1 E0.8",
        "M106 S128",
        "G1 X20 Y20 E2",
        "G92 E0",
        "G1 X30 Y20 E1 F1200",
    ]
    nl = "\r\n" if crlf else "\n"
    data = nl.join(body).encode("utf-8") + nl.encode()
    data += b"G1 X31 Y21 E0.1 ; invalid utf-8 \xff\xfe here\n"  # replaced by U+FFFD: 3 bytes each
    data += b"G1 X32 Y22 E0.1\rG1 X33 Y23 E0.1\r"  # lone CRs end lines for readline(newline="")
    data += b"G1 X34 Y24 E0.1"  # no newline at the end
    if bom:
        data = codecs.BOM_UTF8 + data
    path = tmp_path / "tricky.gcode"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("crlf", [True, False])
@pytest.mark.parametrize("bom", [True, False])
@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_bom_crlf_non_ascii_and_invalid_bytes(tmp_path, crlf, bom, chunk):
    path = _tricky_file(tmp_path, crlf, bom)
    ends = [end for _, end in octoprint_lines(path)]
    for cut in sorted(
        set(range(0, ends[-1] + 3)) if chunk == 5 else set(ends) | {e - 1 for e in ends} | {0, 2, 3}
    ):
        assert replay_file(path, cut, chunk_size=chunk).state == reference(path, cut), cut


def test_positions_are_octoprints(tmp_path):
    """The reference reader above agrees with OctoPrint's own PrintingGcodeFileInformation."""
    from octoprint.util.comm import PrintingGcodeFileInformation

    path = _tricky_file(tmp_path)
    info = PrintingGcodeFileInformation(str(path))
    info.start()
    got = []
    while True:
        line, pos, _ = info.getNext()
        if line is None:
            break
        got.append((line, pos))
    ours = [(line.split(";")[0].strip(), end) for line, end in octoprint_lines(path)]
    ours = [(line, end) for line, end in ours if line]
    assert [pos for _, pos in got] == [end for _, end in ours]
    assert ours[-1][1] == info.getFilesize() + 2 * 2  # two replaced bytes count 3 each


def test_notes_are_interleaved(tmp_path):
    path = tmp_path / "n.gcode"
    path.write_text("G90\nM82\nG92 E0\nG1 X1 Y1 E1\nG1 X2 Y2 E2\nG1 X3 Y3 E3\n")
    ends = [end for _, end in octoprint_lines(path)]
    notes = [
        (0, "G91"),  # before the first line: G90 of the file overrides it
        (ends[2], "M106 S10"),
        (ends[2], "M106 S20"),  # same position: given order
        (ends[3] - 2, "G92 E10"),  # mid-line: goes before that line
        (ends[4], "G1 Z5"),
        (ends[5] + 100, "M106 S99"),  # beyond end_pos: not applied
    ]
    for cut in range(0, ends[-1] + 2):
        got = replay_file(path, cut, notes=notes).state
        assert got == reference(path, cut, notes=notes), cut
    s = replay_file(path, ends[-1], notes=notes).state
    assert s.fans[0] == 20.0 and s.z == 5.0 and s.relative_xyz is False
    # G92 E10 went in before "G1 X1 Y1 E1": absolute E=1 is then a 9 mm retraction
    assert s.e == 3.0 and s.retracted == 7.0
    # notes given out of order are applied by position, stable within a position
    shuffled = [notes[4], notes[1], notes[0], notes[2], notes[3]]
    assert replay_file(path, ends[-1], notes=shuffled).state == s


def test_replay_into_a_given_tracker(tmp_path):
    path = tmp_path / "t.gcode"
    path.write_text("G1 X5\n")
    t = StateTracker("klipper")
    t.feed("G91")
    assert replay_file(path, 100, tracker=t) is t
    assert t.state.x != 5.0 and t.state.flavour == "klipper"


def test_empty_file_and_negative_position(tmp_path):
    path = tmp_path / "e.gcode"
    path.write_bytes(b"")
    assert replay_file(path, 10).state.lines == 0
    path.write_bytes(codecs.BOM_UTF8)
    assert replay_file(path, 10).state.lines == 0
    path.write_text("G1 X1\n")
    assert replay_file(path, -1).state.lines == 0
