"""A real PauseController on the rig (real MachineCom + VirtualPrinter): the issue's proof, part 1 and 2.

1. Every corpus slicer file, with its printer profile and firmware flavour, is printed with several
   pause/resume cycles at seeded random points (random holds, random motion settings, sometimes
   terminal commands while paused). The stream that reached the printer must hold every file line once,
   in order; each cycle's pause G-code lies between the suppressed line's predecessor and its re-send,
   the restore G-code directly before the re-send; the hold count returns to 0; the events carry
   reason, source and file position; and the tracked snapshot agrees with the virtual printer's own
   M400 + M114 reading (XYZ, where the print is in G90).
2. Cancel during a hold, by SafePause and by OctoPrint: the saved line never goes out, the axis modes
   are restored after the pause G-code, OctoPrint's afterPrintCancelled script runs at once, the print
   ends PrintCancelled, no hold is left.

The big files are printed as a layer-aligned excerpt (start G-code and first layers, random middle
layers, the layers around every M600/M601/G4, the last layer and the end G-code) to keep the suite
within its time budget; SAFEPAUSE_FULL_CORPUS=1 prints every file whole. SAFEPAUSE_SEED changes the
seed (it is in every failure message).
"""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    check_pause_placement,
    corpus_excerpt,
    file_lines,
    flavour_for_gcode,
    unwire_controller,
    wire_controller,
    wire_kind,
)

from octoprint_safepause.adapter.octoprint_port import OctoPrintPort
from octoprint_safepause.core.controller import (
    IDLE,
    PAUSED,
    TAG_PAUSE,
    TAG_RESEND,
)

pytestmark = [pytest.mark.integration]

SEED = int(os.environ.get("SAFEPAUSE_SEED", "20251125"))
FULL = os.environ.get("SAFEPAUSE_FULL_CORPUS") == "1"
BUDGET = 12000  # physical lines per printed excerpt (files up to this size are printed whole)
CORPUS = sorted(CORPUS_GCODE.glob("*.gcode"))
TERMINAL_TAGS = {"source:api", "api:printer.command", "trigger:printer.commands"}
POSITION = re.compile(r"X:(-?[\d.]+) Y:(-?[\d.]+) Z:(-?[\d.]+) E")
PROBE_TAG = "test:probe"


# ---------------------------------------------------------------------------------------------------------
# helpers


class ProbePort(OctoPrintPort):
    """The plugin's port, plus an independent position reading: when armed, `M400` + `M114` go out
    (while held, through the port) right before the controller's first pause line, so the virtual
    printer reports where the file's own moves left the head."""

    def __init__(self, rig):
        super().__init__(*rig.port_args)
        self.armed = False

    def send(self, lines, tags):
        if self.armed and TAG_PAUSE in tags:
            self.armed = False
            super().send(["M400", "M114"], {PROBE_TAG})
        super().send(lines, tags)


class PositionReplies:
    """A `received` hook collecting the printer's position reports."""

    def __init__(self):
        self.replies: list[tuple[float, float, float]] = []

    def __call__(self, comm, line, *args, **kwargs):
        match = POSITION.search(line)
        if match:
            self.replies.append(tuple(float(v) for v in match.groups()))
        return line


@dataclass
class Cycle:
    index: int
    reason: str
    source: str
    requested_at_pos: int
    saved_line: str | None = None
    filepos: int | None = None
    file_position: int | None = None  # OctoPrint's position during the hold
    snapshot: dict | None = None
    probe: tuple | None = None
    saved_filepos: int | None = None
    notes: list = field(default_factory=list)
    skewed: set = field(default_factory=set)  # axes the virtual printer got wrong (see virtual_unit_skew)


def virtual_unit_skew(records, upto) -> set:
    """Axes whose position the virtual printer reports wrongly at `upto`: its G20/G21 handlers rescale
    the current position by 2.54 even when the units do not change (virtual.py _gcode_G21), so after a
    G21 an axis is off until the next move that sets it."""
    settled, skewed = set(), set()
    for record in reversed(records[:upto]):
        words = record.cmd.upper().split()
        if not words:
            continue
        if words[0] in ("G0", "G1", "G2", "G3", "G92", "G28"):
            named = {w[0] for w in words[1:] if w[:1] in "XYZE"}
            bare = words[0] == "G28" and not named - {"E"} or words[0] == "G92" and not named
            settled |= {"X", "Y", "Z"} if bare else named - {"E"}
        elif words[0] in ("G20", "G21"):
            skewed |= {"X", "Y", "Z"} - settled
        if len(settled) == 3:
            break
    return skewed


def pump_native_pause(rig):
    """File 11's M600: the virtual printer answers with //action:paused and no "ok"; acknowledge it and
    resume OctoPrint's own pause, as a user would (not SafePause's, which holds the job)."""
    if rig.state_id() == "PAUSED" and rig.hold_count() == 0:
        rig.fake_ok()
        rig.comm.setPause(False, tags={"trigger:test.m600"})


def wait_until(rig, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        pump_native_pause(rig)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout}s; {rig.diagnose()}")
        time.sleep(0.002)


@pytest.fixture
def wired(rig):
    wired = []

    def make(**kwargs):
        wired.append(wire_controller(rig, **kwargs))
        return wired[-1]

    yield make
    for w in wired:
        unwire_controller(rig, w)


# ---------------------------------------------------------------------------------------------------------
# 1. random pause / resume cycles over every corpus file


def _random_motion(rng: random.Random) -> dict:
    return {
        "lift": rng.choice([0.0, 2.0, 5.0, 30.0]),
        "park_enabled": rng.random() < 0.7,
        "retract_length": rng.choice([0.0, 0.8, 2.0]),
        "prime_extra": rng.choice([0.0, 0.0, 1.5]),
        "fans_off": rng.random() < 0.7,
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", CORPUS, ids=[p.name[:2] for p in CORPUS])
def test_random_pauses_over_the_corpus_keep_every_line_once_in_order(rig, wired, path, tmp_path):
    rng = random.Random(f"{SEED}:{path.name}")
    where = f"(seed {SEED}, {path.name})"
    printed = corpus_excerpt(path, tmp_path, rng, budget=BUDGET, full=FULL)
    data = printed.read_bytes()
    port = ProbePort(rig)
    # file 11's M600 and M601 stay the firmware's here (OctoPrint's own pause, resumed by the pump):
    # these are SafePause's random pauses; the host's filament change and the file's own pauses have
    # their own tests (test_filament_change.py, test_octoprint_pause.py)
    w = wired(
        port=port,
        hold_timeout=1.0,
        flavour=flavour_for_gcode(path.name),
        filament_change="firmware",
        take_over_pause=False,
    )
    controller = w.controller
    replies = PositionReplies()
    rig.hooks["received"] = replies

    size = len(data)
    count = rng.randint(5, 7)
    # byte positions at which to request a pause: mostly random, one early (start G-code), one late
    targets = sorted(
        {rng.randrange(size // 50, size) for _ in range(count - 2)}
        | {rng.randrange(0, size // 50), size - rng.randrange(1, 400)}
    )
    cycles: list[Cycle] = []
    refused = []
    position = lambda: (rig.comm.getFilePosition() or {}).get("pos", 0) if rig.comm else 0  # noqa: E731

    with LogTrap() as trap:
        rig.print_file(printed)
        for target in targets:
            wait_until(
                rig,
                lambda t=target: (
                    position() >= t
                    or rig.state_id() not in ("STARTING", "PRINTING", "PAUSED", "PAUSING", "RESUMING")
                ),
                120,
                f"file position {target} {where}",
            )
            if rig.state_id() != "PRINTING":
                refused.append((target, rig.state_id()))
                if rig.state_id() in ("FINISHING", "OPERATIONAL"):
                    break
                continue
            w.settings.update(_random_motion(rng))
            probing = port.armed = rng.random() < 0.8
            n_replies = len(replies.replies)
            cycle = Cycle(
                len(cycles),
                f"reason-{len(cycles)}",
                rng.choice(["test", "plugin:detector", "api"]),
                position(),
            )
            n_events = len(w.events)
            if not controller.try_(controller.pause, reason=cycle.reason, source=cycle.source):
                port.armed = False
                refused.append((target, rig.state_id()))
                continue
            wait_until(rig, lambda: controller.state in (PAUSED, IDLE), 10, f"paused {where}")
            state = controller.get_state()
            if controller.state == IDLE:
                # the print ended before a line could be held (the late target near the end of the file):
                # an aborted pause. Its error is one of two, both legitimate: the fallback found OctoPrint
                # no longer printing, or OctoPrint's PrintDone reached the controller first (event-bus
                # timing). Either way nothing was held, saved or announced.
                error = state["error"] or ""
                if error == "the print finished before the pause took effect":
                    assert rig.fired("PrintDone"), (state, where)  # it acted on OctoPrint's PrintDone
                else:
                    no_longer = r"the print is no longer running \((operational|finishing)\): nothing to pause"
                    assert re.fullmatch(no_longer, error), (state, where)
                assert w.events[n_events:] == [], (w.events[n_events:], where)
                assert rig.hold_count() == 0 and not controller.holding, where  # the connection stays up
                port.armed = False
                refused.append((target, "aborted"))
                break
            assert rig.hold_count() == 1, where
            assert state["holding"] and state["reason"] == cycle.reason and state["source"] == cycle.source
            cycle.saved_line, cycle.filepos, cycle.snapshot = (
                state["saved_line"],
                state["filepos"],
                state["snapshot"],
            )
            cycle.file_position = port.file_position()
            # "paused" is announced right after the state is set: wait for it rather than race it
            wait_until(rig, lambda k=n_events: any(e[0] == "paused" for e in w.events[k:]), 5, f"paused event {where}")
            paused_events = [e for e in w.events[n_events:] if e[0] == "paused"]
            assert len(paused_events) == 1, (w.events[n_events:], where)
            payload = paused_events[0][1]
            assert (payload["reason"], payload["source"], payload["filepos"]) == (
                cycle.reason,
                cycle.source,
                cycle.filepos,
            )
            assert payload["origin"] == "local" and payload["file"] == printed.name
            if rng.random() < 0.3:
                for command in rng.sample(["M105", "M117 paused by the test", "M106 S100", "G4 P0"], 2):
                    rig.comm.sendCommand(command, tags=set(TERMINAL_TAGS))
                    cycle.notes.append(command)
            if probing:
                # M400 + M114 went out right before the pause lines: the reply follows them closely
                assert not port.armed, f"no pause line went out {where}"
                wait_until(rig, lambda n=n_replies: len(replies.replies) > n, 10, f"M114 reply {where}")
                cycle.probe = replies.replies[n_replies]
            hold = rng.choice([0.0, 0.02, 0.1, 0.3])
            if hold:
                time.sleep(hold)  # the hold duration itself, not a wait for a condition
            port.armed = False
            controller.resume()
            # idle comes a moment before OctoPrint's count is given back (a stop on the next line is taken)
            wait_until(rig, lambda: controller.state == IDLE and rig.hold_count() == 0, 10, f"resumed {where}")
            assert controller.get_state()["error"] is None, (controller.get_state(), where)
            resumed = [e for e in w.events[n_events:] if e[0] == "resumed"]
            assert len(resumed) == 1 and resumed[0][1]["filepos"] == cycle.filepos, where
            cycles.append(cycle)

        wait_until(
            rig,
            lambda: (
                rig.state_id() in ("OPERATIONAL", "OFFLINE", "ERROR")
                and any(e[0] in ("PrintDone", "PrintFailed", "PrintCancelled") for e in rig.fired())
            ),
            180,
            f"print end {where}",
        )
        assert rig.wait_done(5) == "PrintDone", where
    assert rig.hold_count() == 0 and not controller.holding, where
    assert not trap.ours(), "\n".join(trap.ours())
    assert len(cycles) >= 2, f"only {len(cycles)} pauses took effect, refused/aborted: {refused} {where}"

    records = rig.records()
    report = check_file_lines(records, printed)
    assert report.ok, f"{report} {where}"
    probes = iter(i for i, r in enumerate(records) if PROBE_TAG in (r.tags or ()) and r.cmd == "M114")
    for cycle in cycles:
        if cycle.probe is not None:
            cycle.skewed = virtual_unit_skew(records, next(probes))
    records = [r for r in records if PROBE_TAG not in (r.tags or ())]
    problems = check_pause_placement(records, [c.saved_line for c in cycles])
    assert not problems, f"{problems} {where}"
    resends = iter(r for r in records if TAG_RESEND in (r.tags or ()))
    for cycle in cycles:
        if cycle.saved_line is not None:
            cycle.saved_filepos = int(next(resends).tag_value("filepos:"))

    for cycle in cycles:
        # where the print goes on: the start of the saved line, or OctoPrint's position if none was saved
        if cycle.saved_line is not None:
            start = data.rfind(b"\n", 0, cycle.saved_filepos - 1) + 1
            assert cycle.filepos == start, (cycle, where)
        else:
            assert cycle.filepos == cycle.file_position, (cycle, where)
    mismatches = []
    compared = 0
    for cycle in cycles:
        snap = cycle.snapshot
        if cycle.probe is None or snap is None or snap["relative_xyz"] is not False:
            continue
        for axis, reported in zip("xyz", cycle.probe):
            tracked = snap[axis]
            if tracked is None or axis.upper() in cycle.skewed:
                continue
            compared += 1
            if abs(tracked - reported) > 1e-3:
                mismatches.append((cycle.index, axis, tracked, reported, cycle.saved_line))
    if any(re.match(rb"M600\b", line) for line in data.splitlines()):
        assert rig.fired("PrintPaused"), f"the file's M600 did not pause OctoPrint {where}"
    assert not mismatches, f"tracked position differs from the printer's M114: {mismatches} {where}"
    print(f"{path.name[:2]}: {len(cycles)} cycles, {compared} axes cross-checked, refused/aborted {refused}")


# ---------------------------------------------------------------------------------------------------------
# 2. cancel during the hold


LONG = CORPUS_GCODE / "01_marlin_absE_anycubic_cylinder_0.20mm.gcode"  # absolute E: restore ends in M82
RELATIVE_E = CORPUS_GCODE / "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"  # M83


def _script_lines(records, name="afterPrintCancelled"):
    return [i for i, r in enumerate(records) if r.tags and f"script:{name}" in r.tags]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", [LONG, RELATIVE_E], ids=["absE", "relE"])
@pytest.mark.parametrize("how", ["safepause", "comm.cancelPrint", "port.cancel"])
def test_cancel_while_paused(rig, wired, path, how):
    """Cancel while held: the saved line never goes out, the modes are restored after the pause lines
    (XYZ first, then E), OctoPrint's afterPrintCancelled runs right away, PrintCancelled, no hold left."""
    rng = random.Random(f"{SEED}:cancel:{how}:{path.name}")
    w = wired(hold_timeout=1.0, flavour=flavour_for_gcode(path.name))
    controller = w.controller
    lines = file_lines_cached(path)
    with LogTrap() as trap:
        rig.print_file(path)
        target = rng.randrange(100_000, 300_000)
        wait_until(rig, lambda: (rig.comm.getFilePosition() or {}).get("pos", 0) >= target, 60, "position")
        controller.pause(reason="cancel-test", source="test")
        wait_until(rig, lambda: controller.state == PAUSED, 10, "paused")
        state = controller.get_state()
        saved, snapshot = state["saved_line"], state["snapshot"]
        assert saved is not None and rig.hold_count() == 1
        started = time.monotonic()
        if how == "safepause":
            controller.cancel()
        elif how == "comm.cancelPrint":
            rig.comm.cancelPrint(tags={"source:api", "api:job", "trigger:test"})
        else:
            w.port.cancel({"trigger:test"})
        # OctoPrint's cancel script runs right away, not at some later release
        rig.wait_for(lambda: _script_lines(rig.records()), timeout=5)
        script_after = time.monotonic() - started
        assert rig.wait_done(10) == "PrintCancelled"
        wait_until(rig, lambda: controller.state == IDLE, 5, "idle")
    assert script_after < 3.0, f"afterPrintCancelled only {script_after:.2f}s after the cancel"
    assert rig.hold_count() == 0 and not controller.holding
    assert not trap.ours(), "\n".join(trap.ours())

    records = rig.records()
    report = check_file_lines(records, path, complete=False)
    assert report.ok, report
    files = [r for r in records if r.fileline is not None]
    # nothing after the suppressed line: the last line sent is its predecessor, and it is never re-sent
    assert lines[files[-1].fileline] == saved, (files[-1], saved)
    assert not any(TAG_RESEND in (r.tags or ()) for r in records)
    kinds = "".join(wire_kind(r) for r in records)
    first_pause, last_pause = kinds.index("P"), kinds.rindex("P")
    assert "F" not in kinds[first_pause:], "a file line went out after the pause"
    cancel_at = [i for i, k in enumerate(kinds) if k == "C"]
    assert cancel_at and cancel_at[0] > last_pause, kinds[first_pause:]
    cancel_lines = [records[i].cmd for i in cancel_at]
    xyz = "G91" if snapshot["relative_xyz"] else "G90"
    e_mode = "M83" if snapshot["relative_e"] else "M82"
    assert cancel_lines[:2] == [xyz, e_mode], cancel_lines
    script = _script_lines(records)
    assert script[0] > cancel_at[-1], "afterPrintCancelled ran before the modes were restored"
    assert "U" not in kinds, "restore lines on a cancel"
    names = [e[0] for e in w.events]
    assert names == ["paused", "cancelled"], names
    assert w.events[-1][1]["reason"] == "cancel-test"
    if how != "safepause":
        # OctoPrint's own cancel went through: M108 jumps the queue (out of band), so it may even come
        # before pause lines that were still queued
        last_file = max(i for i, k in enumerate(kinds) if k == "F")
        assert "M108" in [r.cmd for r in records[last_file:]]


_FILE_LINES: dict = {}


def file_lines_cached(path):
    if path not in _FILE_LINES:
        _FILE_LINES[path] = file_lines(path)
    return _FILE_LINES[path]
