"""Pause / resume at many random points of every real slicer file, checked by an independent model.

For each file of the repository's corpus (tests/gcode) and each sampled line k (seeded, reproducible), the stream
file[:k] + pause + (a long hold) + resume + file[k:] runs through tests/unit/firmware_model.py next to the
plain file, and:

* the moves the file makes after the resume (deposits and travels: start, end, Z, extruded length,
  feedrate) are identical to those of the plain file;
* every move we add stays inside the printer profile's volume; XY travel only happens above the highest
  deposited point (+ clearance, or at the top of the volume);
* nothing we add extrudes below the hotend's target, nor retracts below the extrusion temperature;
* after the resume the machine state (position, G92 offsets, logical E, modes, feedrate, tool, heater
  targets, fans, firmware retraction) equals the plain run's; the physical filament differs only by the
  prime pushed at the park position.

The state the sequences start from is the real StateTracker's, fed with the same lines.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from octoprint_safepause.core import gcode
from octoprint_safepause.core.safety import SafetyCheck
from octoprint_safepause.core.sequences import (
    MotionSettings,
    Volume,
    heater_policy,
    mode_restore,
    pause_sequence,
    resume_sequence,
)

from ..corpus import GCODE_DIR, bundled
from .firmware_model import Firmware

CORPUS = GCODE_DIR
SEED = 20240611
SAMPLES = 100  # random pause points per file (plus targeted ones)
WINDOW = 400  # file lines compared after each resume


# Flavour and OctoPrint printer profile of every bundled file: scripts/corpus.py, the one table.
FILES = bundled()
TALL = ("07_", "08_")

TOL = 1e-6


def test_every_corpus_file_is_covered():
    on_disk = {p.name for p in CORPUS.glob("*.gcode")}
    assert on_disk == set(FILES)
    assert all(profile is not None for _, profile in FILES.values()), "a corpus file has no printer profile"


def _settings(rng: random.Random) -> MotionSettings:
    return MotionSettings(
        retract_length=rng.choice([0.0, 0.8, 2.0, 6.0]),
        lift=rng.choice([0.0, 2.0, 5.0, 30.0]),
        clearance=rng.choice([0.0, 2.0, 10.0]),
        park=rng.choice([None, "auto", (0.0, 0.0), (5000.0, -300.0)]),
        prime_extra=rng.choice([0.0, 0.0, 3.0]),
        top_margin=rng.choice([0.0, 0.0, 1.5]),
        fans_off=rng.choice([True, False]),
        keep_steppers=rng.choice([True, True, False]),
    )


def _readings(fw: Firmware) -> dict:
    """What OctoPrint's get_current_temperatures() would say."""
    readings = {f"tool{t}": {"actual": fw.actual.get(t, 20.0), "target": v} for t, v in fw.targets.items()}
    readings["bed"] = {"actual": fw.bed_actual, "target": fw.bed_target}
    return readings


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= TOL


def _same_move(a, b) -> bool:
    return (
        a.kind == b.kind
        and all(_close(p, q) for p, q in zip(a.start, b.start))
        and all(_close(p, q) for p, q in zip(a.end, b.end))
        and _close(a.e, b.e)
        and _close(a.f, b.f)
    )


def _check_pause(name, flavour, volume, lines, k, state, at_pause, plain_moves, rng, settings):
    ref = at_pause.clone()
    fw = at_pause.clone()
    depth_at_pause = ref.filament_peak - ref.filament
    plan = pause_sequence(state, volume, settings, temperatures=_readings(at_pause))
    fw.run(plan.lines)

    # A long hold: maybe the heater policy, maybe a jog by the user, then time passes.
    wait = False
    if rng.random() < 0.4:
        step = heater_policy(state, settings, held_seconds=3 * 3600)
        fw.run(step.lines)
        wait = step.heaters_off
    jog_from = len(fw.moves)
    if plan.xy_clear and None not in (state.x, state.y, state.z) and rng.random() < 0.3:
        # The user jogs up and towards the middle of the bed (OctoPrint's jog: G91, G1, G90). Not
        # where the plan found no room to travel: it warns against jogging and cannot undo it.
        centre = ((volume.x_min + volume.x_max) / 2, (volume.y_min + volume.y_max) / 2)
        dx = 1 if fw.pos[0] < centre[0] else -1
        dy = 1 if fw.pos[1] < centre[1] else -1
        fw.run(["G91", "G1 Z1 F600", f"G1 X{dx} Y{dy} F6000", "G90"])
    jog_to = len(fw.moves)
    fw.elapse()
    resume = resume_sequence(state, plan, volume, settings, wait_for_heat=wait)
    fw.run(resume)
    ours = fw.moves[:jog_from] + fw.moves[jog_to:]
    where = f"{name} line {k} ({lines[k - 1].strip()!r}) plan={plan.lines} resume={resume}"

    # The one safety check that guards every line sent at runtime accepts every built-in line.
    safety = SafetyCheck(volume, state)
    assert safety.check(plan.lines) == [], where
    assert safety.check(heater_policy(state, settings, held_seconds=3 * 3600).lines, commit=False) == [], where
    assert safety.check(mode_restore(state, plan, settings), commit=False) == [], where  # a cancel's
    assert safety.check(resume) == [], where

    assert not fw.errors, where
    assert fw.unknown <= ref.unknown, f"unknown to {flavour}: {fw.unknown - ref.unknown}: {where}"

    top = volume.z_max - settings.top_margin
    max_z = ref.max_deposit_z
    # The tracker skips an unreadable word (01's vendor line "G1 X0.4 Y20 Z0.30.2 ... E30") where
    # Marlin's strtod reads Z0.30: with such lines the clearance is measured from the tracker's
    # height, but the travel must still pass strictly above what the model deposited.
    tracked_max = None
    if state.unreadable and state.max_z is not None:
        tracked_max = state.max_z + (state.offsets.get("Z") or 0.0)
    here = tuple(ref.pos)
    for move in ours:
        # Every end point inside, except straight up or back down to where the print itself left the
        # head (end G-code parks beyond the profile's bed: Cura's Ender-3 at Y235, RRF's Z+5 at the top).
        inside = volume.contains(*move.end) or (
            all(_close(a, b) for a, b in zip(move.end[:2], here[:2]))
            and (_close(move.end[2], here[2]) or volume.z_min <= move.end[2] <= volume.z_max)
        )
        assert inside, f"outside the volume {move}: {where}"
        if move.travels_xy and max_z is not None:
            for z in (move.start[2], move.end[2]):
                clear = z >= max_z + settings.clearance - TOL or (z >= top - TOL and z > max_z + TOL)
                if tracked_max is not None:
                    clear = clear or (z >= tracked_max + settings.clearance - TOL and z > max_z + TOL)
                assert clear, f"XY travel at Z={z} over a print {max_z} high: {move}: {where}"
        if move.e > TOL:
            assert move.temp >= move.target - TOL or (
                move.temp == ref.actual.get(move.tool, 20.0)
                and move.target == ref.targets.get(move.tool, 0.0)
            ), f"extrusion below the target: {move}: {where}"
        elif move.e < -TOL:
            assert move.temp >= settings.min_extrude_temp, f"cold retract: {move}: {where}"
        # Never pulled back further than the configured length, counting the print's own retraction.
        limit = max(depth_at_pause, settings.retract_length, fw.fw_length if state.uses_fw_retract else 0.0)
        assert move.depth <= limit + TOL, f"retracted {move.depth} mm (limit {limit}): {move}: {where}"

    # Liveness: with the position known and room above the print, it does lift and park.
    if None not in (state.x, state.y, state.z) and settings.park is not None:
        needed = max(state.z + settings.lift, (state.max_z or -1e9) + settings.clearance)
        if (
            needed + (state.offsets.get("Z") or 0.0) <= top - 1e-6
            and state.z + (state.offsets.get("Z") or 0.0) <= top
        ):
            assert plan.park_xy is not None and plan.xy_clear, f"room to park but did not: {where}"

    assert fw.snapshot() == ref.snapshot(), where
    primed = fw.filament - ref.filament
    assert _close(primed, 0.0) or _close(primed, settings.prime_extra), where
    if primed > TOL:
        assert plan.park_xy is not None, f"primed without parking: {where}"

    # The print goes on exactly as without the pause.
    fw.lines = k
    fw.moves = []
    fw.run(lines[k : k + WINDOW])
    expected = [m for m in plain_moves if k < m.line <= k + WINDOW]
    assert len(fw.moves) == len(expected), where
    for got, want in zip(fw.moves, expected):
        assert _same_move(got, want), f"after resume {got} != {want}: {where}"
    return plan


@pytest.mark.parametrize("name", sorted(FILES))
def test_pause_resume_anywhere_in_corpus(name):
    flavour, profile = FILES[name]
    volume = Volume.from_profile(profile)
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    rng = random.Random(f"{SEED}:{name}")
    n = len(lines)
    samples = set(rng.sample(range(1, n), SAMPLES)) | {1, 2, 3, 10, 30, n // 2, n - 1}
    tall = name.startswith(TALL)

    tracker = gcode.StateTracker(flavour)
    fw = Firmware(flavour, fw_retract_length=0.8)
    pending = []  # (k, state, model at k) checked once the plain run is complete
    tall_extra = 0
    for k in range(1, n):
        tracker.feed(lines[k - 1])
        fw.feed(lines[k - 1])
        take = k in samples
        if tall and tall_extra < 12 and not take:
            z = tracker.position()[2]
            if z is not None and z > 57.0 and rng.random() < 0.002:
                take = True
                tall_extra += 1
        if take:
            pending.append((k, tracker.state, fw.clone()))
    plain_moves = fw.moves

    clamped = 0
    for k, state, at_pause in pending:
        case_rng = random.Random(f"{SEED}:{name}:{k}")
        settings = _settings(case_rng)
        near_top = tall and state.z is not None and state.z > 57.0
        if near_top:
            settings = replace(settings, lift=5.0, top_margin=0.0)
        plan = _check_pause(name, flavour, volume, lines, k, state, at_pause, plain_moves, case_rng, settings)
        if near_top:
            # Near the top of the 60 mm machine Z+5 does not fit: the lift stops at Z60, or cannot be.
            assert plan.safe_z is None or plan.safe_z == pytest.approx(60.0), plan
            assert any("clamped" in w or "no headroom" in w for w in plan.warnings), plan
            clamped += 1
    if tall:
        assert clamped >= 3, "the tall files must be paused near their top"


def test_tall_file_lift_is_clamped_to_the_volume_top():
    """File 07 at its last layers: Z+lift would leave the 60 mm volume; the lift stops at Z60."""
    name = "07_marlin2_relE_tall58mm_bed120x120x60_tower_0.28mm.gcode"
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    tracker = gcode.StateTracker("marlin")
    state = None
    for line in lines:
        tracker.feed(line)
        z = tracker.position()[2]
        if z is not None and 57.0 < z < 59.0 and tracker.state.max_z and tracker.state.max_z > 57.0:
            state = tracker.state
            break
    assert state is not None
    volume = Volume.from_profile(FILES[name][1])
    plan = pause_sequence(state, volume, replace(MotionSettings(), park="auto", lift=5.0))
    assert plan.safe_z == pytest.approx(60.0)
    assert "G1 Z60 F600" in plan.lines
    assert any("clamped" in w for w in plan.warnings)
