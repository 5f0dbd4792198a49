"""StateTracker semantics shared by all flavours (Marlin, the default, where it matters)."""

from __future__ import annotations

import json

import pytest

from octoprint_safepause.core.gcode import FLAVOURS, PrinterState, StateTracker
from octoprint_safepause.core.gcode import state as tracker_module


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


# ------------------------------------------------------------------------------------------ export / restore


def _trackers():
    """Trackers between them holding a value other than a fresh tracker's in every exported slot."""
    streams = [
        ("klipper", {}, "print_start\nSET_GCODE_OFFSET Z=0.1\nG28\nG90\nM83\nSAVE_GCODE_STATE NAME=x\n"
         "G1 Z0.2 F600\nG1 X1 Y1 E1\nT0\nG10\nG1 E-1\nT1\nM141 S40\nM220 S90\nmy_macro A=1\nG1 X2 E0.5\nG10"),
        ("marlin", {"tools": 2, "home_position": {"X": 0, "Y": 0, "Z": 0}},
         "G28\nG20\nG90\nM83\nM104 S200\nM140 S60\nM106 S100\nM220 S50\nM220 B\nM221 S95\nG1 Z0.01 F100\n"
         "G1 X1 Y1 E0.1\nG1 E-0.04\nT1\nG1 X1-2\nM191 S45"),
        ("reprapfirmware", {}, "T0\nG10 P0 S200 R150\nG28\nG91\nM83\nG92 X10 Y10 E5\nG1 Z0.2\nG1 X3 Y3 E1"),
    ]
    out = []
    for flavour, kw, text in streams:
        t = StateTracker(flavour, **kw)
        t.feed_many(text.split("\n"))
        out.append(t)
    slow = StateTracker("prusa")
    slow._fast = False  # as test_tracker_properties switches the fast path off
    slow._set_scale(1.0)
    slow.feed_many(["G28", "G90", "G1 X5 Y5 Z1 F1200"])
    out.append(slow)
    return out


def _norm(v):
    """A comparable form that tells types apart and NaN equal to NaN (sets and dicts in order)."""
    if isinstance(v, float):
        return ("float", "nan" if v != v else v)
    if isinstance(v, (set, frozenset)):
        return (type(v).__name__, sorted(v))
    if isinstance(v, dict):
        return ("dict", sorted(((repr(k), _norm(x)) for k, x in v.items())))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [_norm(x) for x in v])
    return (type(v).__name__, v)


def test_slots_are_the_one_declaration():
    assert StateTracker.__slots__ == tuple(tracker_module._SLOTS)
    t = StateTracker()
    for name in StateTracker.__slots__:
        getattr(t, name)  # __init__ sets every declared slot
    with pytest.raises(AttributeError):
        t._not_declared = 1  # a slot missing from the declaration cannot even be set


def test_every_exported_slot_round_trips():
    slots = tracker_module._SLOTS
    exported = [name for name, codec in slots.items() if isinstance(codec, tuple)]
    kept = [name for name, codec in slots.items() if codec != tracker_module._TRANSIENT]
    assert set(StateTracker().export()) == {"v", *exported}
    changed = set()
    for t in _trackers():
        fresh = StateTracker()
        u = StateTracker.restore(json.loads(json.dumps(t.export())))
        for name in kept:  # exported and rebuilt slots alike: a slot wrongly left out shows here
            assert _norm(getattr(u, name)) == _norm(getattr(t, name)), name
            if _norm(getattr(t, name)) != _norm(getattr(fresh, name)):
                changed.add(name)
        for line in ("RESTORE_GCODE_STATE NAME=x MOVE=1", "G1 X9 Y9 E1 F300", "T0", "M220 R", "G92", "G21"):
            t.feed(line)
            u.feed(line)
            assert u.state == t.state, line
        assert _norm(u.export()) == _norm(t.export())
    # A slot no sample changes would round-trip untested: give _trackers() a line that changes it.
    assert changed >= set(exported), sorted(set(exported) - changed)


def test_exports_of_another_version_are_refused():
    data = StateTracker().export()
    for version in (None, 1, tracker_module.EXPORT_VERSION + 1):  # 1: before one key per slot
        with pytest.raises(ValueError, match="version"):
            StateTracker.restore(dict(data, v=version))


# ------------------------------------------------------------------------------------------ modelled commands

# Two printers in different modes (absolute/M82 vs relative/M83, inches, retracted, a saved Klipper state
# that differs from the present), so that any command that can change something does so on one of them.
_PREFIXES = (
    "G28\nG90\nM82\nM104 S200\nM140 S60\nM141 S30\nM106 S100\nT0\nG1 Z1 F600\nG1 X10 Y10 E1\n"
    "SAVE_GCODE_STATE",
    "G28\nG20\nG91\nM83\nT1\nM220 S80\nM221 S90\nG10\nSAVE_GCODE_STATE\nG1 X5 Y5 Z2 E1 F300\nG92 Z7",
)
_ARGS = (
    "", " X1 Y2 Z3 E4 F100", " S50", " P1 S50", " T1 S50", " R150", " B", " X", " S0", " P0 R150 S170",
    " Z=0.5 MOVE=1 NAME=default EXTRUDER=extruder1 HEATER=extruder TARGET=215",
)  # fmt: skip
# Commands a print or a terminal sends that the tracker does not model (besides every neutral entry).
_OTHERS = (
    "M105", "M115", "M117", "M73", "M400", "G4", "M300", "M600", "M601", "M862.3", "M204", "M900", "G31",
    "M420", "M486", "SET_VELOCITY_LIMIT", "SET_PRESSURE_ADVANCE", "SET_PRINT_STATS_INFO", "M112",
)  # fmt: skip


def _changes(flavour, command) -> bool:
    """Whether some line of `command` changes the tracker's state on one of the prefixes (apart from the
    line and unreadable-word counts; unknown extended commands are recorded as macros by design)."""
    for prefix in _PREFIXES:
        base = StateTracker(flavour, tools=2)
        base.feed_many(prefix.split("\n"))
        ignored = {"lines": 0, "unreadable": 0, "_macros": []}
        before = dict(base.export(), **ignored)
        for args in _ARGS:
            t = StateTracker.restore(base.export())
            t.feed(("T1" if command == "T" else command) + args)
            if _norm(dict(t.export(), **ignored)) != _norm(before):
                return True
    return False


def test_modelled_commands_are_the_handler_tables():
    from octoprint_safepause.core.gcode import MODELLED_COMMANDS, modelled_commands

    for flavour in FLAVOURS:
        table = tracker_module._HANDLERS[flavour]
        modelled = modelled_commands(flavour)
        assert modelled == {c for c, h in table.items() if h is not tracker_module._h_neutral} | set(
            tracker_module._PROBE_WORDS
        )
        assert modelled <= MODELLED_COMMANDS
    assert modelled_commands() == MODELLED_COMMANDS
    assert {"SET_GCODE_OFFSET", "SAVE_GCODE_STATE", "RESTORE_GCODE_STATE", "ACTIVATE_EXTRUDER"} <= (
        modelled_commands("klipper") - modelled_commands("marlin")
    )
    with pytest.raises(ValueError, match="smoothie"):
        modelled_commands("smoothie")


def test_every_modelled_command_changes_something_and_nothing_else_does():
    from octoprint_safepause.core.gcode import MODELLED_COMMANDS, modelled_commands

    for command in sorted(MODELLED_COMMANDS):
        assert any(_changes(flavour, command) for flavour in FLAVOURS), f"{command} changes nothing"
    every = set(MODELLED_COMMANDS) | set(_OTHERS) | set(tracker_module._NEUTRAL_WORDS)
    for table in tracker_module._HANDLERS.values():
        every |= set(table)
    for flavour in FLAVOURS:
        for command in sorted(every - modelled_commands(flavour)):
            assert not _changes(flavour, command), f"{flavour}: {command} changes the state, not modelled"


def test_the_controller_notes_every_modelled_command():
    from octoprint_safepause.core.controller import NOTED_GCODES
    from octoprint_safepause.core.gcode import MODELLED_COMMANDS

    assert MODELLED_COMMANDS <= NOTED_GCODES
