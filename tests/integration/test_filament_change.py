"""The filament change run by the host, on OctoPrint's real MachineCom and Printer with the virtual
printer (issue 15): the M600 of a real PrusaSlicer file (the shared Prusa MK3S file, colour change)
never reaches the printer, the change happens at exactly that line at the change position (unload,
then load and purge), OctoPrint says Paused, and every other file line goes out once, in order."""

from __future__ import annotations

import random
import re

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    check_pause_placement,
    corpus_excerpt,
    octoprint_blocks,
    unwire_controller,
    wire_controller,
)

from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_PAUSE, TAG_RESUME

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

PRUSA = CORPUS_GCODE / "11_marlin2_relE_M600_M601_pause_prusa_mk3s_0.15mm.gcode"  # M600 at a colour change


@pytest.fixture
def wired(rig):
    made = []

    def make(**settings):
        made.append(wire_controller(rig, port=rig.port(), hold_timeout=0.5, flavour="prusa", **settings))
        return made[-1]

    yield make
    for w in made:
        unwire_controller(rig, w)


def e_moves(records, tag):
    return [r.cmd for r in records if tag in (r.tags or ()) and re.match(r"G1 E-?\d", r.cmd)]


def test_the_files_m600_is_a_host_change_at_that_line(rig, wired, tmp_path):
    controller = wired().controller
    # the start, the layers around the M600 and the end of the real file (its M601 is left out here)
    path = corpus_excerpt(PRUSA, tmp_path, random.Random(15), budget=3000, extra=(rb"M600",))
    lines = [line.split(";", 1)[0].strip() for line in path.read_text().splitlines()]
    m600 = [line for line in lines if line].index("M600") + 1  # OctoPrint's file line number
    with LogTrap() as trap:
        rig.print_file(path)
        rig.wait_for(lambda: controller.state == PAUSED, timeout=90)
        state = controller.get_state()
        assert state["change"] == {"step": "unloaded", "purged": 0.0}
        assert state["source"] == "file" and state["reason"] == f"M600 in the file (line {m600})"
        assert rig.state_id() == "PAUSED" and rig.hold_count() == 1
        records = rig.records()
        assert [r for r in records if r.fileline is not None][-1].fileline == m600 - 1
        # at the change position (the MK3S's 250 x 210 bed: the front middle; the file's own frame is
        # shifted in Y by the profile), then the unload
        parked = [r.cmd for r in records if TAG_PAUSE in (r.tags or ())]
        travel = next(i for i, cmd in enumerate(parked) if cmd.startswith("G1 X125 Y"))
        assert travel < parked.index("G1 E-15 F3000")

        controller.purge(12.5)  # load, then purge, as the "Purge" button does
        rig.wait_for(lambda: controller.get_state()["change"]["purged"] == 12.5, timeout=10)
        rig.printer.resume_print()  # OctoPrint's own Resume: the change's resume
        rig.wait_for(lambda: controller.state == IDLE, timeout=15)
        assert rig.wait_done(60) == "PrintDone"
    records = rig.records()
    assert not [r for r in records if r.cmd == "M600"]  # never sent
    report = check_file_lines(records, path, suppressed=lambda cmd: octoprint_blocks(cmd) or cmd == "M600")
    assert report.ok, report
    assert not check_pause_placement(records, [None])
    assert not trap.ours(), "\n".join(trap.ours())
    pause_e = e_moves(records, TAG_PAUSE)
    unload, load, purge = (pause_e.index(cmd) for cmd in ("G1 E-15 F3000", "G1 E90 F360", "G1 E12.5 F180"))
    assert unload < load < purge
    resume_e = e_moves(records, TAG_RESUME)
    assert "G1 E90 F360" not in resume_e  # loaded already: the resume does not load twice
    assert [name for name, _ in rig.fired() if name in ("PrintPaused", "PrintResumed")] == [
        "PrintPaused",
        "PrintResumed",
    ]


def test_with_the_firmware_set_the_m600_goes_to_the_printer(rig, wired, tmp_path):
    controller = wired(filament_change="firmware").controller
    path = corpus_excerpt(PRUSA, tmp_path, random.Random(15), budget=3000, extra=(rb"M600",))
    rig.print_file(path)
    rig.continue_after_m600(timeout=90)  # the virtual printer's own M600: //action:paused, no "ok"
    assert controller.state == IDLE and rig.hold_count() == 0
    assert rig.wait_done(60) == "PrintDone"
    assert [r for r in rig.records() if r.cmd == "M600"]


def test_after_the_hotend_went_off_the_load_waits_for_heat(rig, wired, tmp_path):
    """The hotend went off during the change (its timeout, or the user): the load waits for the print's
    temperature on the real printer (M109) before any filament moves."""
    controller = wired().controller
    path = corpus_excerpt(PRUSA, tmp_path, random.Random(15), budget=3000, extra=(rb"M600",))
    with LogTrap() as trap:
        rig.print_file(path)
        rig.wait_for(lambda: controller.state == PAUSED, timeout=90)
        rig.send("M104 S0")  # from OctoPrint's terminal, during the hold
        rig.wait_for(lambda: (rig.printer.get_current_temperatures().get("tool0") or {}).get("target") == 0, timeout=10)
        controller.purge(5)
        rig.wait_for(lambda: any(cmd.startswith("G1 E90") for cmd in rig.received()), timeout=60)
        cmds = rig.received()
        load = next((i for i, cmd in enumerate(cmds) if cmd.startswith("G1 E90")), None)
        assert load is not None, cmds[-20:]
        heat = max(i for i, cmd in enumerate(cmds[:load]) if cmd.startswith("M109"))
        assert cmds.index("M104 S0") < heat < load
        controller.resume()
        rig.wait_for(lambda: controller.state == IDLE, timeout=30)
        assert rig.wait_done(60) == "PrintDone"
    assert not trap.ours(), "\n".join(trap.ours())
