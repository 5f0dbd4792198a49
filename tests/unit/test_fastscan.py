"""fastscan.scan equals the per-line tracker (replay_file) field for field, with and without an index.

The reference is a tracker fed the lines exactly as OctoPrint's reader yields them (test_replay's
octoprint_lines), captured at sorted positions in one pass per file and flavour.
"""

from __future__ import annotations

import codecs
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octoprint_safepause.core.gcode import FLAVOURS, StateTracker, fastscan, replay_file
from octoprint_safepause.core.gcode.fastscan import build_index, index_info, scan, tracker_at
from octoprint_safepause.core.gcode.follower import FileFollower

from .independent_model import corpus_files
from .test_replay import octoprint_lines

CORPUS = corpus_files()
SEED = 20251125


def reference_states(path, positions, flavour):
    """{pos: state} after every line ending at or before pos, in one pass."""
    wanted = sorted(set(positions))
    out = {}
    t = StateTracker(flavour)
    i = 0
    for line, end in octoprint_lines(path):
        while i < len(wanted) and wanted[i] < end:
            out[wanted[i]] = t.state
            i += 1
        t.feed(line)
    for pos in wanted[i:]:
        out[pos] = t.state
    return out


def _positions(path, rng, count):
    ends = [end for _, end in octoprint_lines(path)]
    size = ends[-1]
    picks = {0, 1, 2, 3, ends[0], ends[0] - 1, size - 1, size, size + 7}
    picks |= {rng.choice(ends) for _ in range(count // 2)}  # line ends
    picks |= {rng.randrange(size) for _ in range(count // 2)}  # anywhere, mostly mid-line
    return sorted(picks)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("indexes")


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("path", [p for p, _ in CORPUS], ids=[p.name[:2] for p, _ in CORPUS])
def test_corpus_every_flavour_many_positions(path, flavour, index_dir):
    rng = random.Random(f"{SEED}:{path.name}:{flavour}")
    index = index_dir / f"{path.name}.{flavour}.idx"
    info = build_index(path, flavour, index, every=32 * 1024)
    assert info.complete and info.valid and info.checkpoints >= path.stat().st_size // (32 * 1024)
    positions = _positions(path, rng, 30)
    want = reference_states(path, positions, flavour)
    used = 0
    for pos in positions:
        got = scan(path, pos, flavour, index=index)
        assert got.state == want[pos], (path.name, flavour, pos)
        used += got.checkpoint > 0
    assert used >= len(positions) // 2  # most lookups did start from a checkpoint
    # without an index the same, and the recovery facts do not depend on where feeding started
    pos = rng.choice([p for p in positions if p < path.stat().st_size // 3])
    a = scan(path, pos, flavour, index=index)
    b = scan(path, pos, flavour)
    assert b.checkpoint == 0 and b.state == want[pos]
    assert a.as_dict() | {"checkpoint": 0} == b.as_dict(), (path.name, flavour, pos)


# ------------------------------------------------------------------------------------------ synthetic

NUM = st.one_of(
    st.integers(-50, 300).map(str),
    st.floats(-50, 300, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.sampled_from(["0", "-0.8", ".4", "1.2.3", "", "nan", "1e3", "-"]),
)
MOVE = st.tuples(
    st.sampled_from(["G1", "G0", "G1", "G1", "G2", "g1", "G01", " G1"]),
    st.lists(st.tuples(st.sampled_from("XYZEFIJ"), NUM).map("".join), min_size=1, max_size=5),
    st.sampled_from(["", " ; c", ";c X9"]),
).map(lambda t: f"{t[0]} {' '.join(t[1])}{t[2]}")
OTHER = st.sampled_from(
    [
        "G90", "G91", "M82", "M83", "G20", "G21", "G28", "G28 X", "G28 Z", "G29", "G92 E0", "G92 E-3.5",
        "G92 Z10", "G92 X5 Y5", "G92", "G92.1", "G92 X", "T0", "T1", "T-1", "Tx", "G10", "G11",
        "G10 P1 S200 R150", "M104 S210", "M104 T1 S190", "M109 R200", "M140 S60", "M190 S70",
        "M106 S128", "M106 P1 S0.5", "M107", "M220 S80", "M220 B", "M220 R", "M220 B S120", "M221 S95",
        "M221 T1 S90", "M84", "M84 S600", "M18 X", "SET_GCODE_OFFSET Z=0.2", "SET_GCODE_OFFSET Z_ADJUST=-0.05",
        "SAVE_GCODE_STATE NAME=a", "RESTORE_GCODE_STATE NAME=a MOVE=1", "ACTIVATE_EXTRUDER EXTRUDER=extruder1",
        "SET_HEATER_TEMPERATURE HEATER=extruder TARGET=205", "SET_RETRACTION RETRACT_LENGTH=1",
        "print_start BED=60", "my_macro", "M900 K0.05", "M204 P1000 T2000", "M204 S500", "G30", "M117 hi ;x",
        "N12 G1 X1 Y1 E1*47", "; comment", "", "   ", "M568 P0 S200 R160 A2", "@pause", "(paren) G1 X3",
        "G1 X0.4 Y20 Z0.30.2 F1500.0 E30", "\tG1 X2", "M73 P10",
    ]
)  # fmt: skip
LINES = st.lists(st.one_of(MOVE, MOVE, OTHER), min_size=1, max_size=60)
SYNTH = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, lines, newline, bom, tail, name="s.gcode"):
    data = newline.join(lines).encode("utf-8") + tail
    if bom:
        data = codecs.BOM_UTF8 + data
    path = tmp_path / name
    path.write_bytes(data)
    return path


@SYNTH
@given(
    flavour=st.sampled_from(FLAVOURS),
    lines=LINES,
    newline=st.sampled_from(["\n", "\r\n", "\r", "\n", "\n"]),
    bom=st.booleans(),
    tail=st.sampled_from([b"", b"\n", b"\xff\xfe junk\n", b"G1 X7 E\xc3\x28\n"]),
    every=st.sampled_from([1, 7, 64, 4096]),
    seed=st.integers(0, 10**6),
)
def test_synthetic_files_at_random_positions(tmp_path, flavour, lines, newline, bom, tail, every, seed):
    path = _write(tmp_path, lines, newline, bom, tail)
    index = tmp_path / "s.idx"
    build_index(path, flavour, index, every=every)
    size = path.stat().st_size
    rng = random.Random(seed)
    positions = sorted({0, 1, 3, size - 1, size, size + 2} | {rng.randrange(size + 1) for _ in range(12)})
    want = reference_states(path, positions, flavour)
    for pos in positions:
        got = scan(path, pos, flavour, index=index)
        assert got.state == want[pos], pos
        plain = scan(path, pos, flavour)
        assert plain.state == want[pos], pos
        assert got.as_dict() | {"checkpoint": 0} == plain.as_dict(), pos


EDGE = {
    "g92_resets": "G28\nG90\nM83\nG1 Z0.2 F600\nG1 X1 Y1 E1\nG92 E0\nG1 X2 Y2 E0.5\nG92 E5\nG1 X3 E-1\nG92 Z3\nG1 X4 E2",
    "relative_blocks": "G28\nG90\nM82\nG1 Z0.2\nG1 X1 Y1 E1\nG91\nG1 X1 Y-1 Z0.2 E0.5\nG1 X1\nG90\nG1 X5 Y5 E3",
    "g91_end": "G28\nG90\nM82\nG1 Z0.2\nG1 X1 Y1 E1\nG1 X2 Y2 E2\nG91\nG1 Z+0.5 E-5\nG28 X0\nG90\nM84",
    "tools": "T0\nM104 T0 S200\nM104 T1 S190\nG28\nG90\nM83\nG1 Z0.2\nG1 X1 Y1 E1\nG1 E-0.8\nT1\nG1 X2 Y2 E1\nT0\nG1 E0.8",
    "fw_retract": "G28\nG90\nM83\nG1 Z0.2\nG1 X1 Y1 E1\nG10\nG1 X5\nG11\nG1 X6 Y6 E1\nG10",
    "inches": "G28\nG20\nG90\nM83\nG1 Z0.01 F100\nG1 X1 Y1 E0.1\nG21\nG1 X3",
    "overrides": "M220 S80\nM220 B\nM220 S120\nM221 S90\nM221 T1 S80\nM220 R\nM220 B S50",
    "klipper": "print_start\nSET_GCODE_OFFSET Z=0.1\nG28\nG90\nM83\nSAVE_GCODE_STATE NAME=x\nG1 Z0.2\nG1 X1 Y1 E1\n"
    "RESTORE_GCODE_STATE NAME=x MOVE=0\nmy_macro A=1\nSET_VELOCITY_LIMIT ACCEL=3000\nG1 X2 Y2 E1",
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_files_every_position(tmp_path, name, flavour):
    path = _write(tmp_path, EDGE[name].split("\n") * 3, "\n", False, b"\n")
    index = tmp_path / "e.idx"
    build_index(path, flavour, index, every=5)
    size = path.stat().st_size
    positions = list(range(size + 2))
    want = reference_states(path, positions, flavour)
    for pos in positions:
        assert scan(path, pos, flavour, index=index, lookahead=False).state == want[pos], (name, pos)
        assert scan(path, pos, flavour, lookahead=False).state == want[pos], (name, pos)


# ------------------------------------------------------------------------------------------ the index


def _corpus_file(prefix):
    for path, flavour in CORPUS:
        if path.name.startswith(prefix):
            return path, flavour
    raise LookupError(f"no corpus file starts with {prefix!r}")


def test_index_of_another_file_flavour_or_version_is_ignored(tmp_path, monkeypatch):
    path, flavour = _corpus_file("05")
    copy = tmp_path / "copy.gcode"
    copy.write_bytes(path.read_bytes())
    index = tmp_path / "i.idx"
    build_index(copy, flavour, index)
    pos = copy.stat().st_size // 2
    want = replay_file(copy, pos, flavour).state
    assert scan(copy, pos, flavour, index=index).checkpoint > 0

    other = "marlin" if flavour != "marlin" else "klipper"
    r = scan(copy, pos, other, index=index)
    assert r.checkpoint == 0 and "built for" in r.index_reason
    assert r.state == replay_file(copy, pos, other).state

    monkeypatch.setattr(fastscan, "_CODE_VERSION", "something-else")
    r = scan(copy, pos, flavour, index=index)
    assert r.checkpoint == 0 and "version" in r.index_reason and r.state == want
    monkeypatch.undo()

    data = bytearray(copy.read_bytes())
    data[10] = ord(";") if data[10] != ord(";") else ord(" ")  # same size, different head
    copy.write_bytes(bytes(data))
    r = scan(copy, pos, flavour, index=index)
    assert r.checkpoint == 0 and "changed" in r.index_reason
    assert index_info(index, copy, flavour).valid is False

    assert scan(copy, pos, flavour, index=tmp_path / "missing.idx").index_reason == "no index"


def test_partial_and_damaged_indexes_still_give_exact_states(tmp_path):
    path, flavour = _corpus_file("09")
    index = tmp_path / "p.idx"
    build_index(path, flavour, index, every=8192)
    text = index.read_bytes()
    lines = text.split(b"\n")
    # a build cut short by a crash: the header, some checkpoints, half a line
    partial = b"\n".join(lines[:10]) + b"\n" + lines[10][: len(lines[10]) // 2]
    index.unlink()
    Path(str(index) + ".partial").write_bytes(partial)
    info = index_info(index, path, flavour)
    assert info.valid and not info.complete and info.checkpoints == 9
    size = path.stat().st_size
    for pos in (100, info.end - 1, info.end, info.end + 5000, size):
        r = scan(path, pos, flavour, index=index)
        assert r.state == replay_file(path, pos, flavour).state
    assert scan(path, size, flavour, index=index).checkpoint == info.end

    # a damaged checkpoint is not trusted: the scan starts over from the file start
    bad = b"\n".join(lines[:3]) + b"\n" + lines[3][:20] + b"x" * 30 + b"\n"
    Path(str(index) + ".partial").write_bytes(bad)
    pos = size // 2
    r = scan(path, pos, flavour, index=index)
    assert r.state == replay_file(path, pos, flavour).state


def test_build_can_be_cancelled_and_yields(tmp_path):
    path, flavour = _corpus_file("02")
    calls = []
    info = build_index(
        path, flavour, tmp_path / "c.idx", every=4096, cancelled=lambda: len(calls) > 3 or calls.append(1)
    )
    assert not info.complete and info.reason == "cancelled" and info.path.endswith(".partial")
    assert index_info(tmp_path / "c.idx", path, flavour).checkpoints == info.checkpoints
    done = build_index(path, flavour, tmp_path / "d.idx", yield_every=0.0001)
    assert done.complete and not Path(str(tmp_path / "d.idx") + ".partial").exists()


def _recovered_follower(path, offset, flavour, tools=None, index=None):
    """The shadow of a print OctoPrint started at `offset`: seeded from the index, reading on from there."""
    tracker = tracker_at(path, offset, flavour, index=index, tools=tools)
    return None if tracker is None else FileFollower(str(path), tracker, start=offset)


def _octoprint_from(path, offset):
    """(line, OctoPrint's position after it) for a print started at byte `offset`, as its reader does."""
    from octoprint.util.comm import PrintingGcodeFileInformation

    reader = PrintingGcodeFileInformation(str(path))
    reader.start()
    if offset:
        reader.seek(offset)
    out = []
    while True:
        line, pos, _ = reader.getNext()
        if line is None:
            reader.close()
            return out
        out.append((line, pos))


@pytest.mark.parametrize("prefix,tools", [("03", None), ("05", 1), ("11", None)])
def test_a_seeded_follower_goes_on_like_a_full_replay(tmp_path, prefix, tools):
    path, flavour = _corpus_file(prefix)
    index = tmp_path / "t.idx"
    build_index(path, flavour, index, tools=tools)
    ends = [end for _, end in octoprint_lines(path)]
    rng = random.Random(f"{SEED}:{prefix}")
    for offset in sorted(rng.sample(ends[:-200], 4)):
        follower = _recovered_follower(path, offset, flavour, tools, index)
        want = StateTracker(flavour, tools=tools)
        want.feed_many(line for line, end in octoprint_lines(path) if end <= offset)
        assert follower.tracker.state == want.state
        lines = _octoprint_from(path, offset)[:150]
        for _, pos in lines[::7]:  # OctoPrint's positions, counted from the offset
            assert follower.advance(pos - 1) < pos  # the line ending at pos is not fed yet
            assert follower.advance(pos) == pos
        # (OctoPrint's reader skips comment and blank lines; the follower feeds them, as replays do)
        want.feed_many(line for line, end in octoprint_lines(path) if offset < end <= follower.pos)
        assert follower.tracker.state == want.state
        follower.close()


def test_seeding_after_bytes_that_are_not_utf8_and_a_bom(tmp_path):
    """OctoPrint counts a replaced byte as 3 from the file start, but a recovered print counts from the
    byte offset: the seed is the state at that byte, and the follower counts like the recovered print."""
    body = b"G28\nG90\nM83\nM104 S200\nG1 Z0.2 F600\n; \xe9t\xe9 caf\xe9\n"
    body += b"".join(b"G1 X%d Y10 E0.1\nM106 S%d\n" % (10 + i, i) for i in range(60))
    path = tmp_path / "latin.gcode"
    path.write_bytes(codecs.BOM_UTF8 + body)
    index = tmp_path / "l.idx"
    build_index(path, "marlin", index, every=64)
    starts = [3 + body.index(b"G1 X30 "), 3 + body.index(b"M106 S55")]
    for offset in starts:
        for idx in (index, None):
            follower = _recovered_follower(path, offset, "marlin", index=idx)
            fed = codecs.BOM_UTF8 + body[: offset - 3]
            assert follower.tracker.state == replay_file(_write_bytes(tmp_path, fed), 1 << 40, "marlin").state
            lines = _octoprint_from(path, offset)
            end = lines[5][1]
            assert follower.advance(end) == end
            want = StateTracker.restore(tracker_at(path, offset, "marlin").export())
            want.feed_many(line for line, _ in lines[:6])
            assert follower.tracker.state == want.state
            follower.close()
    mid = 3 + body.index(b"G1 X30 ") + 2
    assert tracker_at(path, mid, "marlin", index=index) is None  # inside a line
    assert tracker_at(path, len(body) + 10, "marlin", index=index) is None  # beyond the end
    crlf = tmp_path / "crlf.gcode"
    crlf.write_bytes(b"G28\r\nG1 X1\r\n")
    assert tracker_at(crlf, 4, "marlin") is None  # between the \r and the \n: inside the line
    assert tracker_at(crlf, 5, "marlin").position()[0] is None
    assert tracker_at(crlf, 12, "marlin").position()[0] == 1.0


def _write_bytes(tmp_path, data):
    out = tmp_path / "prefix.gcode"
    out.write_bytes(data)
    return out


def test_an_index_for_another_tool_count_is_not_used(tmp_path):
    path, flavour = _corpus_file("05")  # T0/T1 every layer
    index = tmp_path / "t.idx"
    build_index(path, flavour, index, tools=1)
    pos = path.stat().st_size // 2
    one = scan(path, pos, flavour, index=index, tools=1)
    assert one.checkpoint > 0 and one.state == replay_tools(path, pos, flavour, 1)
    every = scan(path, pos, flavour, index=index)
    assert every.checkpoint == 0 and "tools" in every.index_reason
    assert every.state == replay_file(path, pos, flavour).state
    assert index_info(index, path, flavour, tools=1).valid and not index_info(index, path, flavour).valid


def replay_tools(path, pos, flavour, tools):
    t = StateTracker(flavour, tools=tools)
    t.feed_many(line for line, end in octoprint_lines(path) if end <= pos)
    return t.state


def test_export_restore_round_trips_through_json():
    t = StateTracker("klipper")
    for line in EDGE["klipper"].split("\n") + EDGE["tools"].split("\n"):
        t.feed(line)
    u = StateTracker.restore(json.loads(json.dumps(t.export())))
    assert u.state == t.state
    for line in ("RESTORE_GCODE_STATE NAME=x MOVE=1", "G1 X9 Y9 E1", "T1", "M220 R", "G92"):
        t.feed(line)
        u.feed(line)
        assert u.state == t.state
    with pytest.raises(ValueError, match="version"):
        StateTracker.restore(dict(t.export(), v=0))


# ------------------------------------------------------------------------------------------ recovery facts


LAYERED = """G28
G90
M83
M204 S800
M900 K0.04
G29
G1 Z0.2 F600
G1 X10 Y10 E1
G1 X20 Y10 E1
G1 E-0.8
G1 Z0.6
G1 X0 Y0
G1 Z0.4
G1 E0.8
G1 X10 Y0 E1
G1 X10 Y10 E1
M204 P900
G1 X0 Y10 E1
G1 E-0.8
G1 Z0.8
G1 X5 Y5
M900 K0.05
G1 Z0.6
G1 E0.8
G1 X6 Y6 E1
"""


def _end_of(text, needle, nth=1):
    i = -1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    return text.index("\n", i) + 1


def test_layers_z_window_settings_and_commands(tmp_path):
    path = tmp_path / "l.gcode"
    path.write_text(LAYERED)
    second_layer = LAYERED.index("G1 X10 Y0 E1")  # the first deposit at Z0.4
    pos = _end_of(LAYERED, "G1 X10 Y10 E1", 2)  # mid second layer
    r = scan(path, pos, "marlin")
    assert r.layer_z == 0.4 and r.layer_pos == second_layer and r.layer_done is False
    assert r.resume_layer_pos == second_layer and r.end == pos
    # the last Z_WINDOW lines reach back to before the first Z move: the nozzle height is not bounded
    assert (r.z_low, r.z_high) == (None, None)
    longer = tmp_path / "longer.gcode"
    first = LAYERED.index("G1 X20 Y10 E1")
    longer.write_text(LAYERED[:first] + "G1 X20 Y10 E1\n" * 40 + LAYERED[first:])
    r = scan(longer, len(LAYERED) + 40 * 14 - (len(LAYERED) - pos), "marlin")
    assert (r.z_low, r.z_high) == (0.2, 0.6)  # the first layer and the hop are still in the window
    assert r.settings == ("M204 S800", "M900 K0.04") and r.probed
    assert {"G29", "M204", "M900", "G28"} <= r.commands

    # after the second layer's last deposit and its retract: the layer is complete
    pos = _end_of(LAYERED, "G1 E-0.8", 2)
    r = scan(path, pos, "marlin")
    assert r.layer_done is True and r.resume_layer_pos == r.end == pos
    # in the order of their last occurrence, one per command and parameter set; the K0.05 comes later
    assert r.settings == ("M204 S800", "M900 K0.04", "M204 P900")

    # before any deposit: no layer
    r = scan(path, _end_of(LAYERED, "G1 Z0.2 F600"), "marlin")
    assert r.layer_pos is None and r.layer_z is None and r.resume_layer_pos == r.end

    # the same answers from an index, whatever the spacing
    for every in (1, 50, 300):
        build_index(path, "marlin", tmp_path / "l.idx", every=every)
        for pos in range(len(LAYERED) + 1):
            assert (
                scan(path, pos, "marlin", index=tmp_path / "l.idx").as_dict() | {"checkpoint": 0}
                == scan(path, pos, "marlin").as_dict()
            )


def test_vase_mode_layers_every_0_05_mm(tmp_path):
    lines = ["G28", "G90", "M83", "G1 Z0.2 F600"]
    lines += [f"G1 X{i % 10} Y{i % 7} Z{0.2 + i * 0.01:.2f} E0.1" for i in range(40)]
    path = tmp_path / "v.gcode"
    path.write_text("\n".join(lines) + "\n")
    r = scan(path, path.stat().st_size, "marlin")
    assert r.layer_z == pytest.approx(0.55) and r.state.layer_z == pytest.approx(0.59)
    assert r.z_high - r.z_low == pytest.approx(0.32)  # Z_WINDOW lines and the Z before them
