"""One rule at a time: the pause / resume / cancel G-code of sequences.py.

States come from the real StateTracker fed with short streams (and dataclasses.replace for the odd
field); where it matters the result runs through the independent firmware model next to the plain stream.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from octoprint_safepause.core.gcode import FLAVOURS, StateTracker
from octoprint_safepause.core.sequences import (
    MotionSettings,
    PausePlan,
    Volume,
    can_extrude,
    fan_restore,
    heater_policy,
    hold_lines,
    mode_restore,
    needs_reheat,
    pause_sequence,
    reheat,
    resume_sequence,
    unhold_lines,
)

from .firmware_model import Firmware

PROFILE = {
    "volume": {"width": 200, "depth": 200, "height": 180, "origin": "lowerleft", "formFactor": "rectangular"}
}
VOLUME = Volume.from_profile(PROFILE)
NO_EXTRAS = MotionSettings(park=(0.0, 0.0), fans_off=False, keep_steppers=False)

START = [
    "G28",
    "G90",
    "M83",
    "M140 S60",
    "M104 S210",
    "M190 S60",
    "M109 S210",
    "G92 E0",
    "M106 S128",
    "G1 Z0.2 F600",
    "G1 X10 Y10 F3000",
    "G1 X50 Y10 E2 F1200",
    "G1 X50 Y50 E2",
    "G1 Z0.4",
    "G1 X10 Y50 E2",
]
MORE = ["G1 X10 Y10 E2", "G1 X20 Y20 E1 F900", "G1 Z0.6 F600", "G1 X30 Y30 E1"]


def state_of(lines, flavour="marlin"):
    tracker = StateTracker(flavour)
    for line in lines:
        tracker.feed(line)
    return tracker.state


def readings(fw: Firmware) -> dict:
    return {f"tool{t}": {"actual": fw.actual.get(t, 20.0), "target": v} for t, v in fw.targets.items()}


def roundtrip(
    prefix, settings=NO_EXTRAS, volume=VOLUME, flavour="marlin", more=MORE, hold=(), wait=False, **kw
):
    """Run prefix + pause + hold + resume + more next to prefix + more; returns (plan, resume lines).

    Asserts the state after resume equals the plain one and every later move is identical.
    """
    state = state_of(prefix, flavour)
    plain = Firmware(flavour).run(prefix)
    paused = plain.clone()
    ref = plain.clone()
    plan = pause_sequence(state, volume, settings, temperatures=readings(plain))
    paused.run(plan.lines)
    paused.run(hold)
    paused.elapse()
    resume = resume_sequence(state, plan, volume, settings, wait_for_heat=wait, **kw)
    paused.run(resume)
    assert not paused.errors
    assert paused.snapshot() == ref.snapshot(), (plan.lines, resume)
    for move in paused.moves:
        assert volume.contains(*move.end) or move.end == tuple(ref.pos), move
        if move.e > 0:
            assert move.temp >= move.target, move
    paused.moves = []
    plain.moves = []
    paused.run(more)
    plain.run(more)
    assert [_path(m) for m in paused.moves] == [_path(m) for m in plain.moves]
    return plan, resume


def _path(move):
    return (move.start, move.end, move.e, move.f, move.kind, move.tool)


# ------------------------------------------------------------------------------------------ volume


def test_volume_from_profile_shapes():
    assert Volume.from_profile({}) == Volume(0, 200, 0, 200, 0, 200)
    centre = Volume.from_profile({"volume": {"width": 100, "depth": 80, "height": 50, "origin": "center"}})
    assert (centre.x_min, centre.x_max, centre.y_min, centre.y_max, centre.z_max) == (-50, 50, -40, 40, 50)
    disc = Volume.from_profile(
        {"volume": {"width": 180, "depth": 999, "height": 300, "formFactor": "circular"}}
    )
    assert disc.circular and disc.radius == 90 and (disc.y_min, disc.y_max) == (-90, 90)
    assert not disc.contains(80, 80) and disc.contains(60, 60)
    box = {"x_min": -10, "x_max": 230, "y_min": -4, "y_max": 210, "z_min": 0, "z_max": 240}
    custom = Volume.from_profile({"volume": {"width": 220, "depth": 210, "height": 240, "custom_box": box}})
    assert (custom.x_min, custom.x_max, custom.y_min) == (-10, 230, -4)
    partial = Volume.from_profile(
        {"volume": {"width": 220, "depth": 210, "height": 240, "custom_box": {"y_min": -4}}}
    )
    assert (partial.y_min, partial.y_max, partial.x_max) == (-4, 210, 220)
    assert Volume.from_profile({"extruder": {"count": 2}}).extruders == 2


def test_circular_bed_park_is_moved_inside_the_circle():
    disc = Volume.from_profile({"volume": {"width": 200, "height": 300, "formFactor": "circular"}})
    state = state_of(["G90", "M83", "G92 E0", "G1 X0 Y0 Z0.2 F600", "G1 X10 Y0 E1"])
    plan = pause_sequence(state, disc, replace(NO_EXTRAS, park=(100.0, 100.0)))
    x, y = plan.park_xy
    assert (x * x + y * y) ** 0.5 == pytest.approx(100.0)
    assert x == pytest.approx(y)
    assert any("moved into the build volume" in w for w in plan.warnings)
    auto = pause_sequence(state, disc, replace(NO_EXTRAS, park="auto"))
    assert disc.contains(*auto.park_xy) and auto.park_xy == pytest.approx((0.0, 90.0))


def test_custom_box_limits_park_and_lift():
    box = {"x_min": 5, "x_max": 195, "y_min": -4, "y_max": 190, "z_min": 0, "z_max": 20}
    volume = Volume.from_profile({"volume": {"width": 200, "depth": 200, "height": 180, "custom_box": box}})
    state = state_of(START)
    plan = pause_sequence(state, volume, replace(NO_EXTRAS, park=(0.0, -10.0), lift=50.0))
    assert plan.park_xy == (5.0, -4.0)
    assert plan.safe_z == 20.0
    roundtrip(START, replace(NO_EXTRAS, park=(0.0, -10.0), lift=50.0), volume)


# ------------------------------------------------------------------------------------------ retract


def test_retract_and_exact_unretract():
    plan, resume = roundtrip(START, replace(NO_EXTRAS, retract_length=2.0))
    assert plan.lines[:3] == ["G90", "M83", "G1 E-2 F2100"]
    assert plan.retracted == 2.0
    assert resume.index("G1 E2 F2100") > resume.index("G1 Z0.4 F600")  # un-retract at the print


def test_already_retracted_by_the_print_is_topped_up_only():
    partly = START + ["G1 E-0.8 F2100"]
    plan, resume = roundtrip(partly, replace(NO_EXTRAS, retract_length=2.0))
    assert "G1 E-1.2 F2100" in plan.lines and plan.retracted == pytest.approx(1.2)
    assert "G1 E1.2 F2100" in resume
    fully = START + ["G1 E-5 F2100"]
    plan, resume = roundtrip(fully, replace(NO_EXTRAS, retract_length=2.0))
    assert plan.retracted == 0.0 and not any(line.startswith("G1 E") for line in plan.lines + resume)


def test_firmware_retraction_uses_g10_g11():
    fw_start = START + ["G10", "G1 X60 Y60 F3000", "G11", "G1 X70 Y60 E1"]
    plan, resume = roundtrip(fw_start, replace(NO_EXTRAS, retract_length=2.0))
    assert plan.fw_retract and "G10" in plan.lines and not any(" E-" in line for line in plan.lines)
    assert resume.count("G11") == 1 and resume.index("G11") > resume.index("G1 Z0.4 F600")
    # Paused while the print itself is G10-retracted: nothing to do, its own G11 follows.
    inside = fw_start + ["G10"]
    plan, resume = roundtrip(inside, replace(NO_EXTRAS, retract_length=2.0), more=["G11", *MORE])
    assert not plan.fw_retract and "G10" not in plan.lines and "G11" not in resume


def test_prime_at_the_park_position_then_retract_again():
    settings = replace(NO_EXTRAS, retract_length=2.0, prime_extra=3.0)
    plan, resume = roundtrip(START, settings)
    prime = resume.index("G1 E5 F300")
    assert resume[prime + 1] == "G1 E-2 F2100"
    assert resume.index("G1 X0 Y0 F6000") < prime < resume.index("G1 X10 Y50 F6000")
    fw = roundtrip(START + ["G10", "G1 X60 Y60", "G11"], settings)[1]
    assert fw[fw.index("G11") : fw.index("G11") + 3] == ["G11", "G1 E3 F300", "G10"]
    # lift only: no prime over the part
    plan, resume = roundtrip(START, replace(settings, park=None))
    assert not any(line.startswith("G1 E5") for line in resume)


def test_cold_hotend_no_retract_no_prime():
    cold = ["G90", "M83", "G92 E0", "G1 Z0.2 F600", "G1 X10 Y10 F3000"]
    state = state_of(cold)
    settings = replace(NO_EXTRAS, prime_extra=3.0)
    plan = pause_sequence(state, VOLUME, settings)
    assert plan.retracted == 0 and not plan.hot
    assert any("minimum extrusion temperature" in w for w in plan.warnings)
    resume = resume_sequence(state, plan, VOLUME, settings)
    assert not any(line.startswith(("G1 E", "G10", "G11")) for line in resume)
    # Target set but still heating (pause during M109): the reading decides.
    heating = state_of(START)
    assert can_extrude(heating, settings, None)
    assert not can_extrude(heating, settings, {"tool0": {"actual": 120.0, "target": 210.0}})
    plan = pause_sequence(heating, VOLUME, settings, temperatures={"tool0": {"actual": 120.0, "target": 210}})
    assert plan.retracted == 0 and not plan.hot


def test_no_tool_selected_no_retract():
    state = replace(state_of(START, "reprapfirmware"), tool=-1)
    plan = pause_sequence(state, VOLUME, NO_EXTRAS)
    assert plan.retracted == 0 and any("T-1" in w for w in plan.warnings)


# ------------------------------------------------------------------------------------------ lift, park


def test_lift_clears_everything_printed_before_xy_travel():
    tall_then_low = START + ["G1 Z30", "G1 X60 Y60 E1", "G1 Z0.6 F600", "G1 X150 Y150 F3000"]
    state = state_of(tall_then_low)
    assert state.max_z == 30 and state.z == 0.6
    plan, _ = roundtrip(tall_then_low, replace(NO_EXTRAS, lift=5.0, clearance=2.0))
    assert plan.safe_z == 32.0 and plan.lines.index("G1 Z32 F600") < plan.lines.index("G1 X0 Y0 F6000")
    assert plan.travel_z == 32.0 and plan.xy_clear  # the one place the travel height is worked out


def test_lift_clamped_by_the_volume_top_and_top_margin():
    high = START + ["G1 Z170", "G1 X60 Y60 E1"]
    plan, _ = roundtrip(high, replace(NO_EXTRAS, lift=20.0, top_margin=2.0))
    assert plan.safe_z == 178.0 and plan.xy_clear  # at the top, above the print
    assert any("clamped" in w for w in plan.warnings)


def test_no_headroom_no_lift_no_xy_travel():
    top = START + ["G1 Z180", "G1 X60 Y60 E1"]
    state = state_of(top)
    plan = pause_sequence(state, VOLUME, NO_EXTRAS)
    assert plan.safe_z is None and not plan.xy_clear and plan.park_xy is None
    assert not any(line.startswith("G1 Z") or " X" in line for line in plan.lines)
    assert any("no headroom" in w for w in plan.warnings)
    resume = resume_sequence(state, plan, VOLUME, NO_EXTRAS)
    assert not any(" X" in line for line in resume)
    roundtrip(top)


def test_sequential_print_as_high_as_the_volume_blocks_xy_travel():
    # A first object reaches the top of the volume; the pause hits while printing a low one.
    prefix = START + ["G1 Z180 F600", "G1 X60 Y60 E1", "G1 Z0.6 F600", "G1 X150 Y150 F3000", "G1 X160 E1"]
    state = state_of(prefix)
    plan = pause_sequence(state, VOLUME, NO_EXTRAS)
    assert plan.safe_z == 180.0 and not plan.xy_clear and plan.park_xy is None
    assert any("not enough room above the print" in w for w in plan.warnings)
    plan, resume = roundtrip(prefix)
    assert not any(" X" in line for line in resume)


def test_lift_only_without_park():
    plan, resume = roundtrip(START, replace(NO_EXTRAS, park=None))
    assert plan.safe_z == 5.4 and plan.park_xy is None and not any(" X" in line for line in plan.lines)


def test_unknown_position_makes_no_move():
    state = state_of(["G28", "M83", "M104 S210", "M109 S210"])
    assert state.z is None
    plan = pause_sequence(state, VOLUME, NO_EXTRAS)
    assert not any(line.startswith("G1 Z") or " X" in line for line in plan.lines)
    assert any("Z position unknown" in w for w in plan.warnings)
    resume = resume_sequence(state, plan, VOLUME, NO_EXTRAS)
    assert not any(line.startswith("G1 X") or line.startswith("G1 Z") for line in resume)
    # Z known, XY not: lift only
    z_only = state_of(["G28", "G90", "M83", "M104 S210", "M109 S210", "G1 Z5 F600"])
    plan = pause_sequence(z_only, VOLUME, NO_EXTRAS)
    assert plan.safe_z == 10 and plan.park_xy is None
    assert any("XY position unknown" in w for w in plan.warnings)
    # an offset set while the axis was unknown: its top is unknown too
    plan = pause_sequence(
        replace(z_only, offsets={"X": 0.0, "Y": 0.0, "Z": None, "E": 0.0}), VOLUME, NO_EXTRAS
    )
    assert plan.safe_z is None and any("Z offset unknown" in w for w in plan.warnings)


def test_g92_offsets_machine_versus_logical():
    shifted = START + ["G92 X0 Y0 Z0", "G1 X5 Y5 E1"]  # logical 0 is machine (10, 50, 0.4)
    state = state_of(shifted)
    assert state.offsets["X"] == 10 and state.offsets["Z"] == pytest.approx(0.4)
    settings = replace(NO_EXTRAS, park=(0.0, 0.0), lift=500.0)
    plan, _ = roundtrip(shifted, settings)
    assert plan.park_xy == (-10.0, -50.0)  # machine X0 Y0
    assert plan.safe_z == pytest.approx(180 - 0.4)  # machine top


def test_relative_xyz_print_moves_absolute_and_restores_g91():
    relative = START + ["G91", "G1 X5 Y5 E1", "G1 X5 E1"]
    more = ["G1 X-5 Y-5 E1", "G1 Z0.2 F600", "G1 X10 E1"]
    plan, resume = roundtrip(relative, more=more)
    assert "G90" in plan.lines and "G91" not in plan.lines
    assert resume[-3:-1] == ["G91", "M83"] or resume.index("G91") < resume.index("M83", resume.index("G91"))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("xyz", ["G90", "G91"])
@pytest.mark.parametrize("e_mode", ["M82", "M83"])
def test_mode_order_per_flavour(flavour, xyz, e_mode):
    # The mode line order of the stream matters too: on Marlin 2 the later G90/G91 overrides M82/M83.
    prefix = ["M104 S210", "M109 S210", "G28", "G90", "G92 E0", "G1 Z0.2 X10 Y10 F600", e_mode, xyz]
    prefix += ["G1 X1 Y1 E0.5 F1200", "G1 X1 E0.5"] if xyz == "G91" else ["G1 X20 Y10 E1 F1200", "G1 X30 E2"]
    more = ["G1 X1 Y1 E3 F900", "G1 X2 E4"]
    plan, resume = roundtrip(prefix, replace(NO_EXTRAS, retract_length=1.5), flavour=flavour, more=more)
    if flavour == "klipper":
        assert plan.lines[0] == "SAVE_GCODE_STATE NAME=SAFEPAUSE"
        assert "RESTORE_GCODE_STATE NAME=SAFEPAUSE" in resume and not any(
            line.startswith("G92") for line in resume
        )
    else:
        modes = [line for line in resume if line in ("G90", "G91", "M82", "M83")][-2:]
        assert modes[0] in ("G90", "G91") and modes[1] in ("M82", "M83")  # XYZ first, then E
    assert plan.lines.index("G90") < plan.lines.index("M83")


def test_inch_print_gets_mm_numbers_and_g20_back():
    inch = [
        "M104 S210",
        "M109 S210",
        "G28",
        "G20",
        "G90",
        "M83",
        "G92 E0",
        "G1 Z0.01 X1 Y1 F30",
        "G1 X2 E0.05",
    ]
    more = ["G1 X1 E0.05 F20", "G1 Y2 E0.05"]
    state = state_of(inch)
    assert state.units == "inch" and state.x == pytest.approx(50.8)
    plan, resume = roundtrip(inch, replace(NO_EXTRAS, retract_length=2.0), more=more)
    assert plan.lines[0] == "G21" and "G1 E-2 F2100" in plan.lines
    assert resume[0] == "G21" and resume[-1] == "G20"
    assert resume.index("G1 F762") < resume.index("G20")  # 30 in/min in mm/min, before G20
    # Klipper refuses G20 and Prusa ignores it: never sent there.
    for flavour in ("klipper", "prusa"):
        assert "G21" not in pause_sequence(replace(state, flavour=flavour), VOLUME, NO_EXTRAS).lines


def test_feedrate_restored_without_moving_and_e_rebased():
    plan, resume = roundtrip(START + ["G1 X20 Y50 E1 F1234"])
    assert resume[-2:] == ["G92 E7", "G1 F1234"] or resume.index("G1 F1234") > resume.index("G92 E7")
    # a user purge at the park position is rebased away
    plan, resume = roundtrip(START, hold=["M83", "G1 E10 F300"])


def test_user_jog_during_hold_is_undone():
    settings = replace(NO_EXTRAS, park=(100.0, 100.0))
    roundtrip(START, settings, hold=["G91", "G1 Z-3 F6000", "G1 X-20 Y7 F6000", "G90", "M82"])
    # no lift asked for (already clear of the print): the jog down is undone before any XY travel
    high = START + ["G1 Z10 F600"]
    plan, resume = roundtrip(high, replace(settings, lift=0.0), hold=["G91", "G1 Z-9 F600", "G90"])
    assert plan.safe_z is None and plan.xy_clear
    assert resume.index("G1 Z10 F600") < resume.index("G1 X100 Y100 F6000")


def test_at_park_user_lines_run_after_reheat_and_before_travel():
    settings = replace(NO_EXTRAS, retract_length=1.0)
    plan, resume = roundtrip(START, settings, at_park=["G91", "G1 X5 F3000", "G1 E2 F300", "G90"], wait=True)
    assert resume.index("M109 T0 S210") < resume.index("G91") < resume.index("G1 X10 Y50 F6000")
    assert resume.count("G1 X0 Y0 F6000") == 2  # back to the park position after the user's lines


def test_multi_tool_reselects_tool_and_reheats_all():
    two = Volume.from_profile({**PROFILE, "extruder": {"count": 2}})
    prefix = START + ["M104 T1 S180", "T1", "M109 T1 S200", "G1 X60 Y60 E1"]
    plan, resume = roundtrip(prefix, NO_EXTRAS, two, wait=True)
    assert resume[0] == "T1"
    assert "M109 T0 S210" in resume and "M109 T1 S200" in resume


# ------------------------------------------------------------------------------------------ fans, heat


def test_fans_off_at_pause_and_back_at_resume():
    settings = replace(NO_EXTRAS, fans_off=True)
    prefix = START + ["M106 P1 S200"]
    plan, resume = roundtrip(prefix, settings)
    assert "M106 S0" in plan.lines and "M106 P1 S0" in plan.lines
    assert "M106 S128" in resume and "M106 P1 S200" in resume
    klipper = state_of(prefix, "klipper")
    assert fan_restore(klipper) == ["M106 S200"]  # Klipper's M106 only drives the part fan, P ignored
    assert fan_restore(replace(klipper, fans={0: 128.0, 1: 50.0})) == ["M106 S128"]


def test_heater_policy_timeline():
    state = state_of(START)
    settings = replace(NO_EXTRAS, hotend_off_after=15.0, bed_off_after=60.0)
    step = heater_policy(state, settings, 60.0)
    assert step.lines == [] and not step.heaters_off and step.next_check == 900.0
    step = heater_policy(state, settings, 901.0, step.done)
    assert step.lines == ["M104 T0 S0"] and step.heaters_off and step.next_check == 3600.0
    again = heater_policy(state, settings, 1000.0, step.done)
    assert again.lines == [] and again.heaters_off
    late = heater_policy(state, settings, 3600.0, again.done)
    assert late.lines == ["M140 S0"] and late.next_check is None
    never = heater_policy(state, replace(settings, hotend_off_after=0.0, bed_off_after=0.0), 1e6)
    assert never.lines == [] and never.next_check is None and not never.heaters_off


def test_heaters_off_then_reheat_and_wait_before_extrusion():
    settings = replace(
        NO_EXTRAS, retract_length=2.0, prime_extra=1.0, hotend_off_after=1.0, bed_off_after=1.0
    )
    step = heater_policy(state_of(START), settings, 3600.0)
    plan, resume = roundtrip(START, settings, hold=step.lines, wait=step.heaters_off)
    assert resume.index("M190 S60") < resume.index("M109 T0 S210") < resume.index("G1 E3 F300")


def test_rrf_heaters_keep_their_temperatures():
    prefix = ["G10 P0 S210 R150", "T0", "M116", *START[9:]]
    state = state_of(prefix, "reprapfirmware")
    step = heater_policy(state, replace(NO_EXTRAS, hotend_off_after=1.0), 600.0)
    assert step.lines == ["M568 P0 A0"]
    assert reheat(state, flavour="reprapfirmware") == ["M568 P0 A2", "M116"]
    roundtrip(prefix, NO_EXTRAS, flavour="reprapfirmware", hold=step.lines, wait=True)
    # a single-tool print that never sends T: M109 selected tool 0
    single = state_of(START, "reprapfirmware")
    assert heater_policy(single, replace(NO_EXTRAS, hotend_off_after=1.0), 600.0).lines == ["M568 P0 A0"]
    step = heater_policy(single, replace(NO_EXTRAS, hotend_off_after=1.0, bed_off_after=1.0), 600.0)
    roundtrip(START, NO_EXTRAS, flavour="reprapfirmware", hold=step.lines, wait=True)


def test_needs_reheat_compares_octoprint_readings():
    state = state_of(START)
    hot = {"tool0": {"actual": 209.0, "target": 210.0}, "bed": {"actual": 60.0, "target": 60.0}}
    assert not needs_reheat(state, hot)
    assert needs_reheat(state, {**hot, "tool0": {"actual": 209.0, "target": 0.0}})
    assert needs_reheat(state, {**hot, "bed": {"actual": 40.0, "target": 60.0}})
    assert not needs_reheat(state, None)


# ------------------------------------------------------------------------------------------ long holds


def test_hold_and_unhold_lines_per_flavour():
    settings = MotionSettings(hold_backstop=2.0)
    assert hold_lines("marlin", settings) == ["M84 S7200"]
    assert hold_lines("prusa", settings) == ["M84 S7200", "M86 S7200"]
    assert hold_lines("klipper", settings) == ["SET_IDLE_TIMEOUT TIMEOUT=7200"]
    assert hold_lines("reprapfirmware", settings) == ["M84 S7200"]
    assert unhold_lines("marlin", settings) == ["M84 S120"]
    assert unhold_lines("prusa", settings) == ["M84 S60", "M86 S1800"]
    assert unhold_lines("klipper", settings) == ["SET_IDLE_TIMEOUT TIMEOUT=600"]
    assert unhold_lines("reprapfirmware", settings) == ["M84 S30"]
    assert unhold_lines("marlin", replace(settings, idle_timeout_restore=300)) == ["M84 S300"]


def test_steppers_held_during_pause_and_restored_at_resume():
    settings = replace(NO_EXTRAS, keep_steppers=True)
    state = state_of(START)
    plan = pause_sequence(state, VOLUME, settings)
    assert plan.lines[-1] == "M84 S86400" and plan.steppers_held
    assert resume_sequence(state, plan, VOLUME, settings)[-1] == "M84 S120"


# ------------------------------------------------------------------------------------------ cancel


def test_mode_restore_for_cancel():
    state = state_of(START + ["G91"])
    assert mode_restore(state) == ["G91", "M83"]
    unknown = state_of(["G1 X1 Y1 Z1 F600"])  # Cura never sends G90: the power-on default
    assert mode_restore(unknown) == ["G90", "M82"]
    k_state = state_of(START, "klipper")
    plan = pause_sequence(k_state, VOLUME, MotionSettings())
    assert mode_restore(k_state, plan) == [
        "RESTORE_GCODE_STATE NAME=SAFEPAUSE",
        "SET_IDLE_TIMEOUT TIMEOUT=600",
    ]
    inch = state_of(["G20", "G90", "M82"])
    assert mode_restore(inch)[-1] == "G20"


def test_plan_is_json_ready():
    plan = pause_sequence(state_of(START), VOLUME, MotionSettings(park="auto"))
    assert isinstance(plan, PausePlan)
    json.dumps(plan.as_dict())
