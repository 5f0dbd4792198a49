"""The recovery prelude: safety rules and exact continuation, checked by the independent firmware model.

For sampled points of every corpus file (each with its own flavour and printer profile) and of generated
prints run as every flavour, the printer is left where the file had got to a few lines before the
recorded position (OctoPrint's position is what it had read, ahead of the firmware), then:

* position kept: the model as the plain run left it, heaters cooled down; position lost: a fresh model
  whose head is physically where the plain run left it, believing nothing;
* the prelude runs, then the file from the start point (the recorded position or the start of its layer).

Checked: no error and nothing the firmware does not know; every move we add stays in the volume; XY
travel only above everything deposited (plus the clearance, or at the top of the volume); no Z homing;
no extrusion below the heater targets, no retraction below the extrusion temperature; and the deposits
that follow equal the plain file's from the start point on (position lost: raised by the known
uncertainty of where the nozzle stopped, never lowered).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octoprint_safepause.core.filament import ChangeSettings
from octoprint_safepause.core.gcode import FLAVOURS, StateTracker
from octoprint_safepause.core.gcode.fastscan import SETTINGS_COMMANDS, build_index, scan
from octoprint_safepause.core.recovery.prelude import (
    LAYER,
    POSITION,
    Prelude,
    RecoveryError,
    RecoverySettings,
    build_prelude,
    prelude_check,
    settings_from,
)
from octoprint_safepause.core.sequences import MotionSettings, Volume

from ..corpus import GCODE_DIR as CORPUS
from ..corpus import bundled
from .firmware_model import Firmware
from .test_replay import octoprint_lines

FILES = bundled()  # {name: (flavour, printer profile)}, from scripts/corpus.py
TOL = 1e-6
WINDOW = 300  # file lines compared after the prelude
SEED = 20251126


class Model(Firmware):
    """The firmware model plus Klipper's SET_KINEMATIC_POSITION, and a Z homing at the top if asked."""

    z_home_top: float | None = None

    def _extended(self, command, rest):
        if command == "SET_KINEMATIC_POSITION" and self.flavour == "klipper":
            args = {
                k.upper(): float(v) for k, v in (part.split("=", 1) for part in rest.split() if "=" in part)
            }
            for i, axis in enumerate("XYZ"):
                if axis in args:
                    # the head stays where it is; the firmware now believes it is at args[axis]
                    self.offset[i] = self.pos[i] - args[axis]
            return
        super()._extended(command, rest)

    def _g28(self, p):
        super()._g28(p)
        if self.z_home_top is not None and "Z" in p:
            self.pos[2] = self.z_home_top

    _HANDLERS = dict(Firmware._HANDLERS, G28=_g28)


def _close(a, b, tol=TOL):
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol


class Print:
    """A file, its lines as OctoPrint reads them, and the plain run of the model with clones."""

    def __init__(self, path, flavour, volume, tmp_path, clone_at=()):
        self.path = path
        self.flavour = flavour
        self.volume = volume
        pairs = list(octoprint_lines(path))
        self.lines = [line for line, _ in pairs]
        self.ends = [end for _, end in pairs]
        self.index = tmp_path / f"{path.name}.{flavour}.idx"
        build_index(path, flavour, self.index, every=32 * 1024)
        fw = Model(flavour, fw_retract_length=0.8)
        self.at = {}
        wanted = set(clone_at)
        for k, line in enumerate(self.lines, 1):
            fw.feed(line)
            if k in wanted:
                self.at[k] = fw.clone()
        self.plain = fw

    def line_at(self, pos):
        """Number of lines before the byte position `pos` (a line start)."""
        if pos == 0:
            return 0
        i = self.ends.index(pos)
        return i + 1


def check(
    pr: Print,
    k_exec: int,
    k_rec: int,
    kept: bool,
    start: str,
    motion: MotionSettings,
    rsettings: RecoverySettings,
    load: ChangeSettings | None = None,
) -> Prelude | None:
    """One recovery (with `load`: stopped during a filament change with the filament out); returns the
    prelude, or None when build_prelude refused for want of room."""
    path, flavour, volume = pr.path, pr.flavour, pr.volume
    pos = pr.ends[k_rec - 1]
    at_pos = scan(path, pos, flavour, index=pr.index)
    at_start = at_pos if start == POSITION else scan(path, at_pos.resume_layer_pos, flavour, index=pr.index)
    physical = pr.at[k_exec]
    where = f"{path.name} exec line {k_exec} rec line {k_rec} kept={kept} start={start}"
    try:
        prelude = build_prelude(
            at_pos, at_start, volume, motion, rsettings, position_kept=kept, start=start, flavour=flavour, load=load
        )
    except RecoveryError as error:
        # refused: only when there really is no room above the print, or nothing known yet
        message = str(error)
        assert "no room" in message or "unknown" in message, f"{message}: {where}"
        return None
    where += f" prelude={prelude.lines}"
    if load is not None:
        # loaded and purged before the prime, or said that it must be done by hand
        loads = prelude.lines.count(f"G1 E{load.load_length:g} F{load.load_speed * 60:g}")
        by_hand = any("load it by hand" in w for w in prelude.warnings)
        assert (loads, by_hand) in ((1, False), (0, True)), where
    assert prelude.start_pos <= pos and prelude.start == prelude.start_pos  # UTF-8 corpus: same counts
    # the one safety check that every prelude passes before it is sent accepts the built one
    assert prelude_check(at_pos, volume, kept, flavour=flavour).check(prelude.lines) == [], where

    if kept:
        fw = physical.clone()
        # the heaters went off meanwhile (firmware idle timeouts): the prelude must wait for them
        fw.targets = {t: 0.0 for t in fw.targets}
        fw.actual = {t: 20.0 for t in fw.actual}
        fw.bed_target, fw.bed_actual = 0.0, 20.0
        fw.rrf_tools = {t: [v[0], v[1], 0] for t, v in fw.rrf_tools.items()}
    else:
        fw = Model(flavour, fw_retract_length=0.8)
        fw.pos = list(physical.pos)  # physically where it stopped; it believes nothing
        fw.z_home_top = volume.z_max
    fw.moves = []
    fw.errors = []
    unknown_before = set(fw.unknown)
    fw.run(prelude.lines)
    ours = fw.moves
    assert not fw.errors, f"{fw.errors}: {where}"
    # the model has no feed-rate/flow overrides and no firmware settings; every other line it must know
    assert fw.unknown - unknown_before <= SETTINGS_COMMANDS | {"M220", "M221"}, f"{fw.unknown}: {where}"

    # Z homing only as configured, and never a bare G28
    for line in prelude.lines:
        if line.startswith("G28"):
            axes = line.split()[1:]
            assert axes and ("Z" not in axes or "Z" in rsettings.home_axes), where

    top = volume.z_max - motion.top_margin
    if not kept:
        # Where the nozzle stopped is known to within the Z window: the lift may not aim at the very top
        # (the nozzle could be that much higher), so "at the top" means within that uncertainty.
        top -= at_pos.z_high - at_pos.z_low
    max_dep = physical.max_deposit_z
    # The tracker skips an unreadable word (01's and 09's vendor line "G1 X0.4 Y20 Z0.30.2 ... E30") where
    # the model, like Marlin's strtod, reads Z0.30: with such lines the clearance counts from the
    # tracker's height, but the travel must still pass strictly above what the model deposited.
    tracked = None
    state = at_pos.state
    if state.unreadable and state.max_z is not None:
        tracked = state.max_z + (state.offsets.get("Z") or 0.0)
    for move in ours:
        assert volume.contains(*move.end), f"outside the volume {move}: {where}"
        if move.travels_xy and max_dep is not None:
            for z in (move.start[2], move.end[2]):
                clear = z >= max_dep + motion.clearance - TOL or (z >= top - TOL and z > max_dep + TOL)
                if tracked is not None:
                    clear = clear or (z >= tracked + motion.clearance - TOL and z > max_dep + TOL)
                assert clear, f"XY travel at Z{z} over a print {max_dep} high: {move}: {where}"
        if move.e > TOL:
            assert move.target > 0 and move.temp >= move.target - TOL, f"cold extrusion {move}: {where}"
        elif move.e < -TOL:
            assert move.temp >= motion.min_extrude_temp, f"cold retract {move}: {where}"

    # the file goes on as it would have from the start point
    s = pr.line_at(prelude.start_pos)
    fw.lines = s
    fw.moves = []
    fw.run(pr.lines[s : s + WINDOW])
    got = [m for m in fw.moves if m.deposits]
    want = [m for m in pr.plain.moves if s < m.line <= s + WINDOW and m.deposits]
    assert len(got) == len(want), where
    shift = 0.0
    if not kept and "Z" not in rsettings.home_axes:
        declared = at_pos.z_low + (at_pos.state.offsets.get("Z") or 0.0)
        shift = physical.pos[2] - declared
        assert shift >= -TOL, f"Z declared above the nozzle ({shift}): {where}"
    for a, b in zip(got, want):
        same = (
            all(_close(p, q) for p, q in zip(a.start[:2] + a.end[:2], b.start[:2] + b.end[:2]))
            and _close(a.start[2], b.start[2] + shift)
            and _close(a.end[2], b.end[2] + shift)
            and _close(a.e, b.e)
            and _close(a.f, b.f)
        )
        assert same, f"after the prelude {a} != {b} (shift {shift}): {where}"
    return prelude


# ----------------------------------------------------------------------------------------------- corpus

SAMPLES = 8


@pytest.mark.parametrize("name", sorted(FILES))
def test_corpus_recoveries_are_safe_and_continue_exactly(name, tmp_path):
    flavour, profile = FILES[name]
    path = CORPUS / name
    volume = Volume.from_profile(profile)
    n = sum(1 for _ in octoprint_lines(path))
    rng = random.Random(f"{SEED}:{name}")
    cases = []
    for _ in range(SAMPLES):
        k_rec = rng.randrange(40, n - 5)
        k_exec = k_rec - rng.choice([0, 0, 1, 3, 8, 20])
        cases.append((k_exec, k_rec))
    if name.startswith(("07_", "08_")):
        # the 58 mm parts on a 60 mm machine: near the top the lift is clamped, or there is no room
        for _ in range(4):
            k_rec = rng.randrange(n - n // 50, n - 40)
            cases.append((k_rec - rng.choice([0, 5]), k_rec))
    pr = Print(path, flavour, volume, tmp_path, clone_at=[k for k, _ in cases])
    done = refused = 0
    for i, (k_exec, k_rec) in enumerate(cases):
        case = random.Random(f"{SEED}:{name}:{i}")
        motion = MotionSettings(
            lift=case.choice([2.0, 5.0, 30.0]),
            clearance=case.choice([0.0, 2.0, 10.0]),
            top_margin=case.choice([0.0, 1.5]),
        )
        rsettings = RecoverySettings(prime_length=case.choice([0.0, 3.0]), park=case.choice(["auto", None]))
        load = case.choice([None, ChangeSettings()])
        for kept in (False, True):
            for start in (POSITION, LAYER):
                prelude = check(pr, k_exec, k_rec, kept, start, motion, rsettings, load)
                done += prelude is not None
                refused += prelude is None
    assert done >= refused  # mostly recoverable; refusals only near the top of the tall files


# ---------------------------------------------------------------------------------------- generated


@st.composite
def prints(draw):
    """A plausible print: start G-code, layers with retracts, hops, travels and deposits, end G-code."""
    rel_e = draw(st.booleans())
    fw_retract = draw(st.booleans())
    reset_e = draw(st.booleans())
    hop = draw(st.sampled_from([0.0, 0.4]))
    layer_h = draw(st.sampled_from([0.1, 0.2, 0.3]))
    lines = ["G21", "G28", "G90", "M83" if rel_e else "M82", "M140 S60", "M104 S210", "M190 S60", "M109 S210"]
    lines += ["G92 E0", "M106 S100", "M220 S90", "M221 S97"]
    e = 0.0
    rng = random.Random(draw(st.integers(0, 10**6)))
    for layer in range(draw(st.integers(2, 5))):
        z = round(0.2 + layer * layer_h, 3)
        if fw_retract:
            lines.append("G10")
        else:
            e -= 0.8
            lines.append(f"G1 E{-0.8 if rel_e else e:.5f} F2100")
        if hop:
            lines.append(f"G1 Z{z + hop:.3f} F600")
        lines.append(f"G1 X{rng.uniform(20, 80):.3f} Y{rng.uniform(20, 80):.3f} F6000")
        lines.append(f"G1 Z{z:.3f} F600")
        if fw_retract:
            lines.append("G11")
        else:
            e += 0.8
            lines.append(f"G1 E{0.8 if rel_e else e:.5f} F2100")
        for _ in range(rng.randrange(3, 9)):
            de = rng.uniform(0.01, 0.5)
            e += de
            lines.append(
                f"G1 X{rng.uniform(20, 80):.3f} Y{rng.uniform(20, 80):.3f} E{de if rel_e else e:.5f} F1200"
            )
        if reset_e and not rel_e:
            lines.append("G92 E0")
            e = 0.0
        if rng.random() < 0.3:
            lines.append(f"M106 S{rng.randrange(0, 256)}")
    lines += ["G91", "G1 Z5 E-2", "G90", "M104 S0", "M140 S0", "M84"]
    return lines


GEN = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VOLUME = Volume.from_profile({"volume": {"width": 100, "depth": 100, "height": 60}})


@GEN
@given(
    lines=prints(),
    flavour=st.sampled_from(FLAVOURS),
    kept=st.booleans(),
    start=st.sampled_from([POSITION, LAYER]),
    pick=st.integers(0, 10**6),
    back=st.sampled_from([0, 1, 2, 5]),
)
def test_generated_prints_every_flavour(tmp_path, lines, flavour, kept, start, pick, back):
    path = tmp_path / "g.gcode"
    path.write_text("\n".join(lines) + "\n")
    first_move = next(i for i, line in enumerate(lines, 1) if line.startswith("G1 X"))
    k_rec = first_move + pick % (len(lines) - first_move)
    k_exec = max(first_move, k_rec - back)
    pr = Print(path, flavour, VOLUME, tmp_path, clone_at=[k_exec])
    check(pr, k_exec, k_rec, kept, start, MotionSettings(), RecoverySettings())


# ------------------------------------------------------------------------------------------- one rule at a time

# A first layer long enough that the Z window (the last 32 lines) lies after the first Z move: within it
# the nozzle might still be at the homing height, and a position-lost recovery refuses.
FIRST_LAYER = [f"G1 X{10 + i} Y{10 + i % 2} E0.1" for i in range(30)]
BASE = [
    "G28", "G90", "M83", "M140 S60", "M104 S215", "M190 S60", "M109 S215", "G92 E0", "M106 S128",
    "M204 P900 T1500", "G1 Z0.2 F600", "G1 X10 Y10 F3000", *FIRST_LAYER, "G1 X50 Y10 E2 F1200",
    "G1 E-0.8 F2100", "G1 Z0.6 F600", "G1 X50 Y50 F6000", "G1 Z0.4 F600", "G1 E0.8 F2100",
    "G1 X10 Y50 E2 F1200", "G1 X10 Y20 E2",
]  # fmt: skip
PROFILE = {"volume": {"width": 200, "depth": 200, "height": 180}}


def prelude_for(
    tmp_path, lines, flavour="marlin", kept=False, start=POSITION, profile=PROFILE, after=(), **kw
):
    """The prelude for a file of `lines` + `after` that died after `lines`."""
    path = tmp_path / "r.gcode"
    text = "\n".join(lines) + "\n"
    path.write_text(text + "".join(line + "\n" for line in after))
    at_pos = scan(path, len(text.encode()), flavour)
    at_start = scan(path, at_pos.resume_layer_pos, flavour) if start == LAYER else None
    motion = kw.pop("motion", MotionSettings())
    return build_prelude(
        at_pos, at_start, Volume.from_profile(profile), motion, position_kept=kept, start=start, **kw
    )


def _index(lines, prefix):
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_position_lost_declares_z_lifts_homes_xy_then_heats(tmp_path, flavour):
    p = prelude_for(tmp_path, BASE, flavour)
    lines = p.lines
    # the nozzle stopped somewhere between the first layer (Z0.2), the hop (Z0.6) and Z0.4: the lowest
    declare = "SET_KINEMATIC_POSITION Z=0.2" if flavour == "klipper" else "G92 Z0.2"
    assert lines[:5] == [declare, "G91", "G1 Z5 F600", "G90", "G28 X Y"]
    assert not any(line.startswith("G28") and "Z" in line for line in lines)
    heat = _index(lines, "M190" if flavour != "reprapfirmware" else "M190")
    assert heat < _index(lines, "M109" if flavour != "reprapfirmware" else "M116")
    prime = _index(lines, "G1 E")
    assert prime > _index(lines, "M109" if flavour != "reprapfirmware" else "M116")
    travel = _index(lines, "G1 X10 Y20")
    assert travel > prime and lines[travel + 1] == "G1 Z0.4 F600"
    assert lines[-1].startswith("M") or lines[-1].startswith("G1 F")
    assert "M204 P900 T1500" in lines  # firmware settings the reset forgot
    assert p.start == p.start_pos and p.travel_z == pytest.approx(5.2)


def test_position_kept_reheats_at_the_park_and_skips_what_the_firmware_kept(tmp_path):
    p = prelude_for(tmp_path, BASE, kept=True)
    assert p.lines[:2] == ["G90", "G1 Z5.6 F600"]  # above the window's highest Z (the 0.6 hop) + lift
    assert p.lines[2] == "G1 X10 Y190 F6000"  # Marlin's default park corner
    assert not any(line.startswith(("G28", "G92 Z", "M204", "M220", "M221")) for line in p.lines)
    assert _index(p.lines, "M190") < _index(p.lines, "M109") < _index(p.lines, "G1 E")


def test_rrf_sets_tool_temperatures_explicitly(tmp_path):
    lines = ["T0", "G10 P0 S215 R170"] + [line for line in BASE if not line.startswith(("M104", "M109"))]
    p = prelude_for(tmp_path, lines, "reprapfirmware")
    assert "M568 P0 S215 R170" in p.lines and "M568 P0 A2" in p.lines and "T0" in p.lines
    assert _index(p.lines, "M190") < _index(p.lines, "M116") < _index(p.lines, "G1 E")


def test_overrides_settings_and_inches(tmp_path):
    lines = ["G20"] + BASE[:-2] + ["M220 S80", "M220 B", "M220 S120", "M221 S95", "G1 X0.5 Y0.5 E0.1"]
    p = prelude_for(tmp_path, lines)
    assert p.lines[0] == "G21" and p.lines[-1] == "G20"
    assert "M220 S80" in p.lines and "M220 B S120" in p.lines and "M221 S95" in p.lines
    assert p.lines.index("M220 B S120") > p.lines.index("M220 S80")
    k = prelude_for(tmp_path, lines, "klipper")  # G20 is refused by Klipper: no inches there
    assert "G20" not in k.lines and "M220 S120" in k.lines and "M220 B S120" not in k.lines


def test_g92_frames_are_restored(tmp_path):
    lines = BASE[:-2] + ["G92 X0 Y0", "G1 X5 Y5 E1", "G92 Z10", "G1 X6 Y6 E1"]
    p = prelude_for(tmp_path, lines)
    # after homing X/Y the frame is the machine's: go to machine X56 Y56, then the print's frame back
    i = p.lines.index("G1 X56 Y56 F6000")
    assert p.lines[i + 1] == "G92 X6 Y6" and p.lines[i + 2] == "G1 Z10 F600"
    # declared in the frame at the recorded position: the lowest Z of the window (machine 0.2) after G92 Z10
    assert p.lines[0] == "G92 Z9.8"


def test_layer_start_replays_the_layer_and_the_travel_clears_the_part(tmp_path):
    more = ["G1 X20 Y20 E2", "G1 E-0.8", "G1 Z0.8", "G1 X5 Y5", "G1 Z0.6", "G1 E0.8", "G1 X9 Y9 E1"]
    p = prelude_for(tmp_path, BASE, start=LAYER, after=more)
    assert p.start_choice == LAYER and p.start < prelude_for(tmp_path, BASE, after=more).start
    assert p.start == (tmp_path / "r.gcode").read_text().index("G1 X10 Y50 E2")  # the layer's first deposit
    i = p.lines.index("G1 X50 Y50 F6000")  # where that deposit starts, at the travel height
    assert p.lines[i + 1] == "G1 Z0.4 F600" and p.travel_z > 0.6
    # at the end of a layer there is nothing to repeat: the start of the next one is the position
    done = prelude_for(tmp_path, BASE + more[:2], start=LAYER, after=more[2:])
    assert done.start == prelude_for(tmp_path, BASE + more[:2], after=more[2:]).start


def test_home_z_only_when_configured_and_first(tmp_path):
    p = prelude_for(tmp_path, BASE, settings=RecoverySettings(home_axes="XYZ"))
    assert p.lines[:2] == ["G28 Z", "G28 X Y"] and not any(line.startswith("G92 Z") for line in p.lines)
    with pytest.raises(RecoveryError, match="X and Y"):
        prelude_for(tmp_path, BASE, settings=RecoverySettings(home_axes="Z"))


def test_refusals(tmp_path):
    with pytest.raises(RecoveryError, match="position at the start point is unknown"):
        prelude_for(tmp_path, ["G90", "M83", "M104 S200"])
    with pytest.raises(RecoveryError, match="too close to the start"):
        prelude_for(tmp_path, BASE[:14])
    with pytest.raises(RecoveryError, match="offset is unknown"):
        prelude_for(tmp_path, ["G90", "G92 X5", "G1 Y5 Z1", "G1 X6 Y6 E1"])
    tall = {"volume": {"width": 100, "depth": 100, "height": 20}}
    lines = BASE + ["G1 Z19.5 F600"] + [f"G1 X{10 + i} Y10 E0.1" for i in range(40)]
    with pytest.raises(RecoveryError, match="no room"):
        prelude_for(tmp_path, lines, profile=tall, motion=MotionSettings(top_margin=1.0))
    with pytest.raises(ValueError, match="start"):
        prelude_for(tmp_path, BASE, start="somewhere")


def test_warnings_name_macros_probing_and_unrestored_commands(tmp_path):
    lines = ["print_start", "G29", "M851 Z-1.2"] + BASE[1:]
    p = prelude_for(tmp_path, lines, "marlin")
    text = " ".join(p.warnings)
    assert "PRINT_START" in text and "M420 S1" in text
    assert "M851" in text and "M204" not in text  # M204 is replayed, M851 is not
    kept = prelude_for(tmp_path, lines, "marlin", kept=True)
    assert kept.warnings == []  # the firmware still has all of it
    # the uncertainty of where the nozzle stopped is said
    assert any("Z0.2 and Z0.6" in w for w in p.warnings)


def test_the_tracker_fed_prelude_and_rest_matches_the_file_state(tmp_path):
    """What the shadow tracker will believe after the prelude equals the file's state at the start."""
    p = prelude_for(tmp_path, BASE)
    t = StateTracker("marlin")
    t.feed_many(p.lines)
    want = scan(tmp_path / "r.gcode", p.start_pos, "marlin").state
    got = t.state
    for field in ("x", "y", "z", "e", "f", "bed_temp"):
        assert getattr(got, field) == pytest.approx(getattr(want, field), abs=1e-6), field
    for field in ("relative_xyz", "relative_e", "units", "fans", "tool_temps", "retracted", "fw_retracted"):
        assert getattr(got, field) == getattr(want, field), field


def test_settings_from_raw_values():
    assert settings_from({}) == RecoverySettings()
    s = settings_from({"recovery_home_axes": "yx", "recovery_prime_length": "5", "recovery_park": False})
    assert s.home_axes == "XY" and s.prime_length == 5.0 and s.park is None
    assert settings_from({"recovery_prime_length": "lots", "recovery_home_axes": "Q"}) == RecoverySettings()
    assert replace(RecoverySettings(), home_axes="zyx").home_axes == "XYZ"


def test_a_known_nozzle_height_replaces_the_window(tmp_path):
    """A SafePause hold that ended badly had lifted the nozzle to a known height."""
    p = prelude_for(tmp_path, BASE, nozzle_z=12.0)
    assert p.lines[:3] == ["G92 Z12", "G91", "G1 Z5 F600"] and p.travel_z == 17.0
    assert not any("stopped between" in w for w in p.warnings)
    short = prelude_for(tmp_path, BASE[:14], nozzle_z=12.0)  # no window needed
    assert short.lines[0] == "G92 Z12"
