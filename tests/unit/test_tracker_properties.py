"""Properties over arbitrary input: nothing raises, invariants hold, the fast path agrees with the
general one."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from octoprint_safepause.core.gcode import FLAVOURS, StateTracker, parse_line

SETTINGS = settings(max_examples=300, deadline=None)

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).map(lambda f: f"{f:.4f}"),
    st.integers(-300, 300).map(str),
    st.sampled_from(
        [
            "",
            "-",
            ".",
            "1.2.3",
            "nan",
            "inf",
            "-Infinity",
            "1e999",
            "-0",
            ".5",
            "5.",
            "+3",
            "1e3",
            "1_0",
            "١٢",
            "0.30.2",
            "9" * 400,
        ]
    ),
)
LETTERS = st.sampled_from(list("XYZEFIJRSPTBDHLW") + ["x", "e", ";", "(", ")", "*", "\\;", "é"])
WORDS = st.tuples(LETTERS, NUMBERS).map("".join)
COMMANDS = st.sampled_from(
    ["G1", "G0", "G2", "G3", "G92", "G92.1", "G90", "G91", "M82", "M83", "G20", "G21", "G28", "G29", "G30", "M104", "M109", "M140",
     "M190", "M106", "M107", "M220", "M221", "T0", "T1", "T-1", "Tx", "G10", "G11", "M84", "N5 G1", "g1", "G01", " G1", "M117",
     "SET_GCODE_OFFSET Z=0.1", "SAVE_GCODE_STATE", "RESTORE_GCODE_STATE MOVE=1", "print_start", ";", ""]
)  # fmt: skip
ENDINGS = st.sampled_from(["", " ", "\n", " ;c X5\n", "\r\n", "\t", "*12"])
GCODE_LINES = st.tuples(COMMANDS, st.sampled_from([" ", "", "  "]), st.lists(WORDS, max_size=6), ENDINGS).map(
    lambda t: t[0] + t[1] + t[1].join(t[2]) + t[3]
)
ANY_LINES = st.one_of(GCODE_LINES, st.text(max_size=80))


def _check_invariants(s):
    assert 0 <= s.unreadable <= s.lines
    assert all(0.0 <= v <= 255.0 for v in s.fans.values())
    assert s.retracted >= 0.0 and math.isfinite(s.retracted)
    for v in (s.x, s.y, s.z, s.e, s.f, s.max_z, s.layer_z, s.bed_temp, s.chamber_temp, *s.offsets.values()):
        assert v is None or math.isfinite(v)
    assert all(
        math.isfinite(v) for v in (*s.tool_temps.values(), *s.flow_factors.values(), s.feedrate_factor)
    )
    assert s.units in ("mm", "inch") and len(s.macros) <= 64
    assert s.relative_xyz in (None, True, False) and s.relative_e in (None, True, False)
    assert isinstance(s.as_dict(), dict)


@SETTINGS
@given(st.text())
def test_parse_line_never_raises(text):
    p = parse_line(text)
    assert p.command is None or isinstance(p.command, str)
    assert all(v is None or math.isfinite(v) for v in p.params.values())


@SETTINGS
@given(st.sampled_from(FLAVOURS), st.lists(ANY_LINES, max_size=40))
def test_feed_never_raises_and_invariants_hold(flavour, lines):
    t = StateTracker(flavour)
    for line in lines:
        t.feed(line)
    s = t.state
    assert s.lines == len(lines)
    _check_invariants(s)


@SETTINGS
@given(st.sampled_from(FLAVOURS), st.lists(GCODE_LINES, max_size=40))
def test_fast_path_agrees_with_the_general_path(flavour, lines):
    fast = StateTracker(flavour)
    slow = StateTracker(flavour)
    slow._fast = slow._mm = False
    for line in ["G90", "M83", "G92 E0", "G1 X0 Y0 Z0"] + lines:
        fast.feed(line)
        slow.feed(line)
        assert fast.state.as_dict() == slow.state.as_dict(), line
