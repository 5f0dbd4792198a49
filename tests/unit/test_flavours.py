"""Firmware flavour differences, each checked against the firmware source it comes from.

Sources: Marlin 2.x (gcode/gcode.h set_relative_mode, gcode/geometry/G92.cpp, module/motion.cpp
set_axis_is_at_home, gcode/temp/M106_M107.cpp, M104_M109.cpp, gcode/config/M220.cpp, M221.cpp);
Klipper 84104bb (klippy/extras/gcode_move.py, fan.py, heater_bed.py, firmware_retraction.py,
kinematics/extruder.py); RepRapFirmware 3.5-dev fc1cd16 (src/GCodes/GCodes2.cpp cases 10, 90/91,
82/83, 104/109, 106, 220/221; GCodes3.cpp SetPositions; GCodes6.cpp ExecuteG30; GCodeBuffer.cpp
GetPwmValue); Prusa-Firmware MK3 0c9bf5d (Firmware/Marlin_main.cpp cases G90/G91/G92/G28, M82/M83,
M104/M109/M106/M220/M221).
"""

from __future__ import annotations

import pytest

from octoprint_safepause.core.gcode import FLAVOURS, PrinterState, StateTracker


def run(text: str, flavour: str) -> PrinterState:
    t = StateTracker(flavour)
    for line in text.strip().splitlines():
        t.feed(line.strip())
    return t.state


# --------------------------------------------------------------------------- E mode


@pytest.mark.parametrize(
    "flavour,after_g90,after_g91",
    [
        ("marlin", False, True),  # set_relative_mode overwrites the E bits
        ("klipper", True, True),  # absolute_extrude untouched, but G91 makes E relative (OR)
        ("reprapfirmware", True, True),  # G90/G91 only touch axesRelative
        ("prusa", True, True),  # G90/G91 mask X|Y|Z only
    ],
)
def test_m83_then_g90_g91(flavour, after_g90, after_g91):
    assert run("M83\nG91\nG90", flavour).relative_e is after_g90
    assert run("M83\nG90\nG91", flavour).relative_e is after_g91


@pytest.mark.parametrize(
    "flavour,expected",
    [("marlin", False), ("klipper", True), ("reprapfirmware", False), ("prusa", False)],
)
def test_g91_then_m82(flavour, expected):
    # Klipper: absolute_coord False keeps E relative whatever M82 says; elsewhere M82 wins
    assert run("G91\nM82", flavour).relative_e is expected


@pytest.mark.parametrize(
    "flavour,expected",
    [("marlin", True), ("klipper", True), ("reprapfirmware", False), ("prusa", False)],
)
def test_g91_alone_sets_e_relative_only_on_marlin_and_klipper(flavour, expected):
    s = run("M82\nG92 E0\nG91\nG1 E2\nG1 E2", flavour)
    assert s.relative_e is expected
    assert s.e == (4.0 if expected else 2.0)


def test_end_gcode_g91_relative_e_then_g90_on_each_flavour():
    # the file-01 end: G91, "G1 Z+0.5 E-5", G90, then M82 printing was absolute
    text = "G90\nM82\nG92 E0\nG1 X1 Z1 E10\nG91\nG1 Z+0.5 E-5\nG90\nG1 X5"
    for flavour in FLAVOURS:
        s = run(text, flavour)
        assert s.z == 1.5 and s.x == 5.0
        if flavour in ("marlin", "klipper"):
            assert s.e == 5.0 and s.retracted == 5.0  # G91 made E relative: -5 from 10
        else:
            assert s.e == -5.0 and s.retracted == 15.0  # E stayed absolute: to -5


# --------------------------------------------------------------------------- G92, G28, G20


@pytest.mark.parametrize(
    "flavour,zeroed", [("marlin", False), ("klipper", True), ("reprapfirmware", False), ("prusa", False)]
)
def test_bare_g92(flavour, zeroed):
    s = run("G90\nM82\nG1 X10 Y20 Z3\nG92 E7\nG92", flavour)
    if zeroed:  # klippy cmd_G92: no axis -> base_position = last_position
        assert (s.x, s.y, s.z, s.e) == (0.0, 0.0, 0.0, 0.0)
        assert dict(s.offsets) == {"X": 10.0, "Y": 20.0, "Z": 3.0, "E": 0.0}
    else:  # Marlin G92.cpp / RRF SetPositions / Prusa gcode_G92 touch only the axes given
        assert (s.x, s.y, s.z, s.e) == (10.0, 20.0, 3.0, 7.0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_g28_clears_the_g92_shift_of_homed_axes(flavour):
    s = run("G90\nG1 X10 Z5\nG92 X0 Z0\nG28 Z", flavour)
    assert dict(s.offsets)["Z"] == 0.0 and dict(s.offsets)["X"] == 10.0 and s.homed == {"Z"}


def test_klipper_homing_restores_set_gcode_offset():
    s = run("SET_GCODE_OFFSET Z=0.1\nG28\nG90\nG1 Z0.2", "klipper")
    assert dict(s.offsets)["Z"] == pytest.approx(0.1) and s.z == 0.2


def test_klipper_set_gcode_offset_shifts_the_logical_position():
    s = run("G90\nG1 Z1\nSET_GCODE_OFFSET Z=0.2", "klipper")
    assert s.z == pytest.approx(0.8) and dict(s.offsets)["Z"] == pytest.approx(0.2)
    s = run(
        "G90\nG1 Z1\nSET_GCODE_OFFSET Z_ADJUST=0.05 MOVE=1\nSET_GCODE_OFFSET Z_ADJUST=0.05 MOVE=1", "klipper"
    )
    assert s.z == 1.0 and dict(s.offsets)["Z"] == pytest.approx(0.1)


def test_klipper_save_and_restore_gcode_state():
    text = """
    G90
    M83
    G92 E0
    G1 X10 Y10 Z1 E2 F1200
    SAVE_GCODE_STATE NAME=pause
    G91
    M82
    G1 Z5 F600
    G92 E100
    RESTORE_GCODE_STATE NAME=pause
    """
    s = run(text, "klipper")
    assert s.relative_xyz is False and s.relative_e is True and s.f == 1200.0
    assert s.z == 6.0 and s.e == 2.0  # no MOVE: Z stays lifted; the logical E comes back
    s = run(text + "\nRESTORE_GCODE_STATE NAME=pause MOVE=1", "klipper")
    assert s.z == 1.0
    assert run("RESTORE_GCODE_STATE NAME=nothing", "klipper").unreadable == 0


@pytest.mark.parametrize(
    "flavour,inch", [("marlin", True), ("klipper", False), ("reprapfirmware", True), ("prusa", False)]
)
def test_g20_support(flavour, inch):
    # Klipper: "Machine does not support G20"; Prusa-Firmware: "Prusa doesn't support inches"
    s = run("G90\nG20\nG1 X1", flavour)
    assert s.units == ("inch" if inch else "mm")
    assert s.x == (25.4 if inch else 1.0)


def test_prusa_bare_g28_also_levels_the_bed():
    assert run("G28\nG90\nG1 Z5\nG28 W", "prusa").z is None  # W: home all, no G80 (pos. unknown anyway)
    s = run("G28 W\nG80", "prusa")
    assert s.homed == {"X", "Y", "Z"} and s.z is None
    assert run("G80", "marlin").macros == frozenset()  # G80 is not levelling on Marlin


def test_rrf_g30_homes_z():
    s = run("G30", "reprapfirmware")
    assert s.homed == {"Z"} and s.z is None
    assert run("G30 P0 X10 Y10 Z-99999", "reprapfirmware").homed == frozenset()
    assert run("G30", "marlin").homed == frozenset()


# --------------------------------------------------------------------------- G10


def test_rrf_g10_with_p_sets_tool_temperatures_and_is_not_a_retraction():
    s = run("G10 P0 S170 R150\nG10 P1 S215\nT0\nG10 S200", "reprapfirmware")
    assert not s.fw_retracted and not s.uses_fw_retract
    assert dict(s.tool_temps) == {0: 200.0, 1: 215.0} and dict(s.standby_temps) == {0: 150.0}
    s = run("G10\nG11\nG10", "reprapfirmware")
    assert s.fw_retracted and s.uses_fw_retract
    assert not run("G10 L2 P1 X0", "reprapfirmware").uses_fw_retract
    assert run("M568 P1 S190 R160", "reprapfirmware").tool_temps == {1: 190.0}


@pytest.mark.parametrize("flavour", ["marlin", "klipper", "prusa"])
def test_g10_is_a_retraction_elsewhere(flavour):
    s = run("G10 P0 S170", flavour)
    assert s.fw_retracted and s.uses_fw_retract and s.tool_temps == {}


def test_klipper_set_retraction_resets_the_retracted_state():
    assert not run("G10\nSET_RETRACTION RETRACT_LENGTH=1", "klipper").fw_retracted


# --------------------------------------------------------------------------- temperatures


def test_klipper_temperature_commands_default_to_zero():
    s = run("M104 S200\nM140 S60\nM109 R210\nM190", "klipper")
    assert dict(s.tool_temps) == {0: 0.0} and s.bed_temp == 0.0  # get_float('S', 0.): R is not read
    s = run("M104 T1 S205\nSET_HEATER_TEMPERATURE HEATER=heater_bed TARGET=55", "klipper")
    assert dict(s.tool_temps) == {1: 205.0} and s.bed_temp == 55.0


def test_marlin_and_prusa_temperatures_without_s_change_nothing():
    for flavour in ("marlin", "prusa"):
        s = run("M104 S200\nM140 S60\nM104\nM140", flavour)
        assert dict(s.tool_temps) == {0: 200.0} and s.bed_temp == 60.0


def test_rrf_temperatures():
    # R wins over S and sets active and standby; M109 with no tool selected selects it
    s = run("T-1\nM109 S200 R180 T1", "reprapfirmware")
    assert dict(s.tool_temps) == {1: 180.0} and dict(s.standby_temps) == {1: 180.0} and s.tool == 1
    s = run("T0\nM104 S200 T1\nM190 S60 R50", "reprapfirmware")
    assert s.tool == 0 and dict(s.tool_temps) == {1: 200.0} and s.bed_temp == 50.0


def test_prusa_has_one_hotend():
    assert dict(run("T2\nM104 S215", "prusa").tool_temps) == {0: 215.0}


# --------------------------------------------------------------------------- fans


@pytest.mark.parametrize(
    "flavour,expected",
    [
        ("marlin", {0: 255.0, 2: 100.0}),
        ("klipper", {0: 100.0}),  # fan.py: one part fan, P is not read
        ("prusa", {0: 100.0}),  # M106 reads S only
        ("reprapfirmware", {2: 100.0}),  # only S changes a speed (GCodes2.cpp case 106)
    ],
)
def test_m106_index_and_default(flavour, expected):
    assert dict(run("M106\nM106 P2 S100", flavour).fans) == expected


def test_rrf_m106_fractions_and_no_s():
    s = run("M106 S0.5\nM106 P1 S1\nM106 P2 S255\nM106 P3", "reprapfirmware")
    assert dict(s.fans) == {0: 127.5, 1: 255.0, 2: 255.0}
    assert dict(run("M106 S1", "marlin").fans) == {0: 1.0}


def test_m107():
    assert dict(run("M106 P1 S9\nM107 P1", "marlin").fans) == {1: 0.0}
    assert dict(run("M106 S9\nM107 P1", "klipper").fans) == {0: 0.0}


# --------------------------------------------------------------------------- overrides


def test_m220_backup_and_restore_order():
    # Marlin 2.1: R, then B (of the factor before R), then S. Prusa: B, then S, then R.
    assert run("M220 S80\nM220 B\nM220 S50 R", "marlin").feedrate_factor == 50.0
    assert run("M220 S80\nM220 B\nM220 S50 R", "prusa").feedrate_factor == 80.0
    assert run("M220 S80\nM220", "klipper").feedrate_factor == 100.0  # get_float('S', 100.)
    assert run("M220 S80\nM220", "marlin").feedrate_factor == 80.0
    assert run("M220 S80\nM220 S0.5", "reprapfirmware").feedrate_factor == 80.0  # below 1 %: error


def test_m221_targets():
    assert dict(run("T1\nM221 S90\nM221 T0 S80", "marlin").flow_factors) == {1: 90.0, 0: 80.0}
    assert dict(run("T1\nM221 S90\nM221 D0 S80", "reprapfirmware").flow_factors) == {1: 90.0, 0: 80.0}
    assert dict(run("M221 S90", "reprapfirmware").flow_factors) == {}  # no tool selected
    assert dict(run("M221 S90", "klipper").flow_factors) == {0: 90.0}


# --------------------------------------------------------------------------- tools


def test_klipper_tool_change_rebases_e_and_resets_flow():
    s = run("M83\nG92 E0\nT0\nG1 X1 E5\nM221 S90\nT1", "klipper")
    assert s.e == 0.0 and s.tool == 1 and dict(s.flow_factors) == {1: 100.0}
    s = run("M83\nG92 E0\nT0\nG1 X1 E5\nT1", "marlin")
    assert s.e == 5.0
    s = run("ACTIVATE_EXTRUDER EXTRUDER=extruder1", "klipper")
    assert s.tool == 1 and s.macros == frozenset()


def test_prusa_mmu_unknown_tool():
    s = run("T0\nTx", "prusa")
    assert s.tool is None and s.unreadable == 0


def test_slicer_retraction_is_per_extruder():
    s = run("M83\nT0\nG1 E-2\nT1\nG1 E-0.5", "reprapfirmware")
    assert s.retracted == 0.5
    assert run("M83\nT0\nG1 E-2\nT1\nG1 E-0.5\nT0", "reprapfirmware").retracted == 2.0
