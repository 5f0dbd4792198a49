"""Scheduled stops on OctoPrint's real MachineCom and Printer with the virtual printer: the hook finds the
layer's first deposit line by the filepos tag OctoPrint itself gives it, holds it back, and it reaches the
printer once, after the pause (or after the stop's G-code); every other file line once, in order."""

from __future__ import annotations

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    file_lines,
    head_and_tail,
    unwire_controller,
    wire_controller,
)

from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_STOP
from octoprint_safepause.core.gcode import fastscan
from octoprint_safepause.core.schedule import Schedule, layers_from_index, parse

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ZHOP = CORPUS_GCODE / "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"


@pytest.fixture
def wired(rig):
    made = []

    def make(**settings):
        made.append(wire_controller(rig, port=rig.port(), hold_timeout=0.5, **settings))
        return made[-1]

    yield make
    for w in made:
        unwire_controller(rig, w)


def scheduled(controller, job, tmp_path, **request):
    """The running print's schedule (as the Scheduler makes it at PrintStarted) with one stop."""
    info = fastscan.build_index(job.disk_path, "marlin", str(tmp_path / "index.idx"))
    controller.set_schedule(Schedule(job.path, job.disk_path, layers_from_index(fastscan.part_layers(info.layers))))
    return controller.schedule_stop(parse(request, path=None, scope="print"))


def fileline_of(path, stop) -> int:
    """OctoPrint's file line number of the stop's line (the first deposit of its layer)."""
    with open(path, "rb") as handle:
        handle.seek(stop.layer.offset)
        text = handle.readline().decode().split(";", 1)[0].strip()
        before = handle.seek(0) or handle.read(stop.layer.offset)
    counted = sum(1 for raw in before.splitlines() if raw.split(b";", 1)[0].strip())
    assert file_lines(path)[counted] == text
    return counted + 1


def test_a_pause_stop_holds_exactly_the_first_deposit_of_its_layer(rig, wired, tmp_path):
    controller = wired().controller
    path = head_and_tail(ZHOP, tmp_path / "short", head_layers=7)
    with LogTrap() as trap:
        job = rig.print_file(path)
        stop = scheduled(controller, job, tmp_path, at={"layer": 6}, message="magnets")
        rig.wait_for(lambda: controller.state == PAUSED, timeout=90)
        assert rig.state_id() == "PAUSED"
        target = fileline_of(path, stop)
        records = rig.records()
        sent = [r.fileline for r in records if r.fileline is not None]
        assert sent[-1] == target - 1  # the whole layer below, nothing of this one
        assert controller.get_state()["reason"] == "magnets"
        controller.resume()
        rig.wait_for(lambda: controller.state == IDLE, timeout=15)
        assert rig.wait_done(90) == "PrintDone"
    report = check_file_lines(rig.records(), path)
    assert report.ok, report
    assert not trap.ours(), "\n".join(trap.ours())


def test_a_gcode_stop_goes_out_right_before_the_layer_without_a_pause(rig, wired, tmp_path):
    controller = wired().controller
    path = head_and_tail(ZHOP, tmp_path / "short", head_layers=7)
    with LogTrap() as trap:
        job = rig.print_file(path)
        stop = scheduled(controller, job, tmp_path, at={"z": 0.8}, action="gcode", gcode=["M117 stop", "M106 S128"])
        assert rig.wait_done(90) == "PrintDone"
    assert controller.state == IDLE and rig.hold_count() == 0
    records = rig.records()
    ours = [i for i, r in enumerate(records) if TAG_STOP in (r.tags or ())]
    assert [records[i].cmd for i in ours] == ["M117 stop", "M106 S128"]
    following = records[ours[-1] + 1]
    assert following.fileline == fileline_of(path, stop)
    assert not [name for name, _ in rig.fired() if name == "PrintPaused"]
    report = check_file_lines(records, path)
    assert report.ok, report
    assert not trap.ours(), "\n".join(trap.ours())
