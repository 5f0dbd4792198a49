"""StateTracker semantics shared by all flavours (Marlin, the default, where it matters)."""

from __future__ import annotations

import json

import pytest

from octoprint_safepause.gcode import FLAVOURS, PrinterState, StateTracker


def run(text: str, flavour: str = "marlin", **kw) -> PrinterState:
    t = StateTracker(flavour, **kw)
    for line in text.strip().splitlines():
        t.feed(line)
    return t.state


def test_initial_state_is_unknown():
    s = StateTracker().state
    assert (s.x, s.y, s.z, s.e, s.f, s.tool) == (None,) * 6
    assert s.relative_xyz is None and s.relative_e is None and s.units == "mm"
    assert dict(s.offsets) == {"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}
    assert s.homed == frozenset() and s.max_z is None and s.layer_z is None
    assert s.retracted == 0.0 and not s.fw_retracted and not s.uses_fw_retract
    assert s.feedrate_factor == 100.0 and dict(s.fans) == {} and s.flavour == "marlin"


def test_unknown_flavour_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown firmware flavour 'smoothie'.*marlin"):
        StateTracker("smoothie")
    assert FLAVOURS == ("marlin", "klipper", "reprapfirmware", "prusa")


def test_state_is_immutable_and_json_ready():
    s = run("G90\nM83\nG1 X1 Y2 Z3 E1 F100\nM104 S200\nM106 P1 S100\nprint_start A=1")
    with pytest.raises(AttributeError):
        s.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.tool_temps[0] = 1  # type: ignore[index]
    d = s.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["tool_temps"] == {"0": 200.0} and d["fans"] == {"1": 100.0} and d["macros"] == ["PRINT_START"]
    assert d["offsets"] == {"E": 0.0, "X": 0.0, "Y": 0.0, "Z": 0.0} and d["homed"] == []
    assert not hasattr(s, "__dict__")


def test_absolute_and_relative_moves():
    s = run("G90\nG1 X10 Y20 Z0.3 F3000\nG91\nG1 X5 Y-5 Z1\nG0 X1")
    assert (s.x, s.y, s.z, s.f) == (16.0, 15.0, 1.3, 3000.0)
    assert s.relative_xyz is True


def test_moves_before_any_mode_are_absolute_but_the_mode_stays_unknown():
    s = run("G1 X10\nG1 X12")
    assert s.x == 12.0 and s.relative_xyz is None


def test_relative_move_from_unknown_stays_unknown():
    s = run("G91\nG1 X5\nG90\nG1 Y2")
    assert s.x is None and s.y == 2.0


def test_feedrate_is_modal_and_ignores_non_positive_values():
    s = run("G1 F1200\nG1 X1\nG1 X2 F0\nG1 X3 F-5")
    assert s.f == 1200.0
    s = run("G1 F1200 X1\nG1 F1200 X2\nG92 E0\nG1 F1200 X3\nG1 F600 X4")
    assert s.f == 600.0


def test_g20_inches_convert_to_mm():
    s = run("G90\nM83\nG92 E0\nG20\nG1 X1 Y2 Z0.5 E0.1 F60\nG92 X0\nG21\nG1 Y10")
    assert s.x == 0.0 and s.y == 10.0 and s.z == pytest.approx(12.7)
    assert s.e == pytest.approx(2.54) and s.f == pytest.approx(1524.0)
    assert dict(s.offsets)["X"] == pytest.approx(25.4)
    assert run("G20").units == "inch" and run("G20\nG21").units == "mm"


def test_g92_offsets():
    s = run("G90\nG1 X10 Y10 Z5\nG92 X0 Z1\nG1 X5")
    assert (s.x, s.y, s.z) == (5.0, 10.0, 1.0)
    assert dict(s.offsets) == {"X": 10.0, "Y": 0.0, "Z": 4.0, "E": 0.0}
    s = run("M82\nG92 E0\nG1 X1 E5\nG92 E0\nG1 X2 E2")
    assert s.e == 2.0 and dict(s.offsets)["E"] == 5.0


def test_g92_on_an_unknown_axis_makes_the_offset_unknown():
    s = run("G92 X5\nG92 E3")
    assert s.x == 5.0 and dict(s.offsets)["X"] is None
    assert s.e == 3.0 and dict(s.offsets)["E"] == -3.0


def test_marlin_bare_g92_does_nothing_and_g92_1_clears_offsets():
    s = run("G90\nG1 X10 Z2\nG92 X1 Z1\nG92")
    assert (s.x, s.z) == (1.0, 1.0)
    s = run("G90\nG1 X10 Z2\nG92 X1 Z1\nG92.1")
    assert (s.x, s.z) == (10.0, 2.0) and dict(s.offsets)["X"] == 0.0


def test_homing_per_axis_clears_offsets_and_keeps_position_unknown_by_default():
    s = run("G90\nG1 X10 Y10 Z10\nG92 X0 Y0 Z0\nG28 X Y")
    assert s.x is None and s.y is None and s.z == 0.0
    assert s.homed == {"X", "Y"} and dict(s.offsets)["X"] == 0.0 and dict(s.offsets)["Z"] == 10.0
    s = run("G28")
    assert s.homed == {"X", "Y", "Z"}
    s = run("G28 X0 Y0\nG28 Z0\nG28 O", home_position={"x": 0, "y": 0, "z": 5})
    assert (s.x, s.y, s.z) == (0.0, 0.0, 5.0) and s.homed == {"X", "Y", "Z"}


@pytest.mark.parametrize(
    "cmd", ["G29", "G29 L1", "G30 X10 Y10", "G32", "G33", "G34", "M48 P3", "BED_MESH_CALIBRATE"]
)
def test_probing_leaves_the_position_unknown_and_keeps_homing(cmd):
    s = run(f"G28\nG90\nG1 X10 Y10 Z5\n{cmd}")
    assert (s.x, s.y, s.z) == (None, None, None)
    assert s.homed == {"X", "Y", "Z"}


def test_motors_off_unhomes():
    assert run("G28\nM84").homed == frozenset()
    assert run("G28\nM84 X Y").homed == {"Z"}
    assert run("G28\nM84 S600").homed == {"X", "Y", "Z"}
    assert run("G28\nM18 E").homed == {"X", "Y", "Z"}


def test_arcs_use_their_end_point_and_deposit():
    s = run("G90\nM83\nG1 X0 Y0 Z0.2\nG2 X10 Y0 I5 J0 E1\nG3 X10 Y0 Z0.4 R5 F100")
    assert (s.x, s.y, s.z, s.f) == (10.0, 0.0, 0.4, 100.0)
    assert s.max_z == 0.2
    s = run("G90\nM83\nG1 X0 Y0 Z0.3\nG2 I5 J0 E3")  # a full circle has no X/Y but deposits
    assert s.max_z == 0.3 and s.x == 0.0


def test_tools_and_temperatures():
    s = run("M104 S200\nT1\nM104 S210\nM109 T0 R190\nM140 S60\nM190 R55\nM141 S40\nM191 R45")
    assert s.tool == 1 and dict(s.tool_temps) == {0: 190.0, 1: 210.0}
    assert s.bed_temp == 55.0 and s.chamber_temp == 45.0
    # Marlin M109: S wins over R (M104_M109.cpp reads S first); M104 ignores R
    s = run("M109 S200 R150\nM104 R100\nM140\nM190")
    assert dict(s.tool_temps) == {0: 200.0} and s.bed_temp is None
    assert run("T-1").tool == -1
    assert run("M104 S200 T-1").tool_temps == {}


def test_fans():
    s = run("M106\nM106 P1 S127.5\nM106 P2 S300\nM106 P3 S-4\nM107 P1")
    assert dict(s.fans) == {0: 255.0, 1: 0.0, 2: 255.0, 3: 0.0}
    assert dict(run("M106 S100\nM107").fans) == {0: 0.0}


def test_overrides_with_backup_and_restore():
    s = run("M220 S80\nM220 B\nM220 S50")
    assert s.feedrate_factor == 50.0
    assert run("M220 S80\nM220 B\nM220 S50\nM220 R").feedrate_factor == 80.0
    # Marlin 2.1 M220.cpp: R restores, B backs up the factor from before R, then S
    assert run("M220 S80\nM220 B\nM220 S50\nM220 B R").feedrate_factor == 80.0
    assert run("M220 S80\nM220 B\nM220 S50\nM220 B R\nM220 R").feedrate_factor == 50.0
    s = run("M221 S95\nM221 T1 S90\nT1\nM221 S80")
    assert dict(s.flow_factors) == {0: 95.0, 1: 80.0}


def test_firmware_retraction():
    s = run("G10")
    assert s.fw_retracted and s.uses_fw_retract
    s = run("G10\nG10\nG11")
    assert not s.fw_retracted and s.uses_fw_retract
    s = run("T0\nG10\nT1")
    assert not s.fw_retracted  # the state belongs to each extruder
    assert run("T0\nG10\nT1\nT0").fw_retracted
    assert run("G10\nT0").fw_retracted  # the first T names the extruder that was active


def test_slicer_retraction_accounting_relative_e():
    """retracted = filament pulled back by slicer moves and not pushed back yet: every move's E delta
    counts (E-only retractions and PrusaSlicer's wipe, which retracts while travelling); a positive
    delta first undoes the retraction; it never goes below 0."""
    assert run("M83\nG1 E-0.8 F2100").retracted == 0.8
    assert run("M83\nG1 X10 Y10 E-0.5\nG1 E-0.3").retracted == pytest.approx(0.8)  # wipe + retract
    assert run("M83\nG1 E-0.8\nG1 E0.8").retracted == 0.0
    assert run("M83\nG1 E-0.8\nG1 E0.3").retracted == pytest.approx(0.5)
    assert run("M83\nG1 E-0.8\nG1 E1.0").retracted == 0.0  # extra prime does not go negative
    assert run("M83\nG1 X5 E2\nG1 E-1\nG92 E0").retracted == 1.0  # G92 moves no filament
    assert run("M83\nG1 E-1\nG1 X5 Y5 E0.4").retracted == pytest.approx(0.6)


def test_slicer_retraction_accounting_absolute_e():
    assert run("M82\nG92 E0\nG1 X1 E10\nG1 E5").retracted == 5.0
    assert run("M82\nG92 E0\nG1 X1 E10\nG1 E5\nG1 E10").retracted == 0.0
    assert run("M82\nG1 E-5").retracted == 0.0  # E unknown before: no delta to count
    assert run("M82\nG1 X1 E10\nG1 E5").retracted == 5.0


def test_max_z_only_counts_deposits_and_never_drops():
    s = run(
        """
        G90
        M83
        G1 Z0.2
        G1 X10 Y10 E1
        G1 Z0.6
        G1 X20 Y20
        G1 E1
        G1 Z10
        G1 X1 E0
        G1 Z0.4
        G1 X5 Y5 E1
        """
    )
    # travel at 0.6 and 10, an E-only unretract and a zero-E move deposit nothing; sequential
    # printing goes back down to 0.4
    assert s.max_z == pytest.approx(0.4) and s.layer_z == pytest.approx(0.4)
    s = run("G90\nM83\nG1 Z5\nG1 X1 Y1 E1\nG1 Z0.2\nG1 X2 Y2 E1")
    assert s.max_z == 5.0 and s.layer_z == 0.2 and s.z == 0.2


def test_max_z_follows_later_offsets():
    s = run("G90\nM83\nG1 Z2\nG1 X1 E1\nG92 Z0")
    assert s.max_z == 0.0 and s.z == 0.0 and s.layer_z == 0.0


def test_macros_are_recorded_and_bounded():
    t = StateTracker()
    t.feed("print_start EXTRUDER=200 BED=60")
    t.feed("SET_PRINT_STATS_INFO CURRENT_LAYER=1")
    t.feed("EXCLUDE_OBJECT_DEFINE NAME=a")
    t.feed("@pause")
    t.feed("M73 P10")
    assert t.state.macros == {"PRINT_START"}
    for i in range(200):
        t.feed(f"MACRO_{i}")
    assert len(t.state.macros) == 64


def test_malformed_lines_count_and_change_nothing_but_the_bad_word():
    """The vendor start line of file 01: Z is unreadable, X/Y/F/E still apply (Marlin's strtod would
    read Z0.30, Klipper would reject the line; the tracker ignores just the bad word)."""
    t = StateTracker()
    for line in ["G90", "M82", "G92 E0", "G1 X0.4 Y200.0 Z0.2 F5000.0", "G1 X0.4 Y20 Z0.30.2 F1500.0 E30"]:
        t.feed(line)
    s = t.state
    assert (s.x, s.y, s.z, s.e, s.f) == (0.4, 20.0, 0.2, 30.0, 1500.0)
    assert s.unreadable == 1 and s.lines == 5 and s.max_z == 0.2
    t.feed("G1 X")
    t.feed("G1 Xnan Y1")
    t.feed("M104 S")
    t.feed("#junk")
    t.feed('M862.3 P "MK3S"')  # not acted on: not counted
    s = t.state
    assert s.unreadable == 5 and s.x == 0.4 and s.y == 1.0 and s.tool_temps == {}


def test_line_numbers_checksums_and_comments_on_the_fast_path():
    s = run("N10 G1 X5 Y5*33\nG1 X6 ; comment Y9\nG1 X7 (c) Y8\nG0 X1 Y2 F100;c")
    assert (s.x, s.y, s.f) == (1.0, 2.0, 100.0) and s.unreadable == 0


@pytest.mark.parametrize(
    "junk",
    [
        None,
        b"G1 X1",
        "",
        "\x00",
        "é" * 50,
        "G1 " + "9" * 400,
        "G1 X1e400",
        "G1 X-inf",
        "M106 Snan",
        "T1.5",
        "T99999999999999999999999",
    ],
)
def test_feed_never_raises(junk):
    t = StateTracker()
    t.feed(junk)  # type: ignore[arg-type]
    assert t.state.lines == 1


def test_feed_many_and_position():
    t = StateTracker()
    t.feed_many(["G90", "G1 X1 Y2 Z3", "G92 E4"])
    assert t.position() == (1.0, 2.0, 3.0, 4.0) and t.lines == 3


def test_tools_the_host_drops_are_not_selected():
    """OctoPrint drops T<n> for n >= the printer profile's extruder count (comm.py _validate_tool): the
    printer stays on its tool, so a pause must not believe T99 is active (and skip its retract)."""
    t = StateTracker("marlin", tools=1)
    for line in ("M104 S200", "T0", "G1 X1 E1", "T99", "G1 X2 E1"):
        t.feed(line)
    assert t.state.tool == 0 and t.state.tool_temps == {0: 200.0}
    again = StateTracker.restore(t.export())
    again.feed("T5")
    assert again.state.tool == 0
    unbounded = StateTracker("marlin")
    unbounded.feed("T99")
    assert unbounded.state.tool == 99  # a tracker that is not told follows the stream
