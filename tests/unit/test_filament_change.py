"""The filament change run by the host: its sequences (pure) and its flow in the controller, against
the fake comm (change position, unload, purge, load, the resume's retraction, M600 in the file)."""

from __future__ import annotations

import re

import pytest

from octoprint_safepause.core import filament
from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_PAUSE, TAG_RESUME, Refused
from octoprint_safepause.core.filament import ChangeSettings, change_position, ready_lines, unload_lines
from octoprint_safepause.core.gcode import StateTracker
from octoprint_safepause.core.sequences import MotionSettings, PausePlan, Volume

from . import test_controller
from .test_controller import SETTINGS, expected_file_lines, file_lines, wait_for, wait_resumed

make = test_controller.make  # the fixture: test_controller's rig (a 220 x 220 x 250 volume)

BOX = Volume(0, 220, 0, 220, 0, 250)


def plan(retracted=0.0, fw_retract=False, flavour="marlin"):
    return PausePlan([], retracted, fw_retract, 10.0, True, flavour=flavour, hot=True)


def state_after(*lines):
    tracker = StateTracker("marlin")
    for line in ("G28", "G90", "M83", *lines):
        tracker.feed(line)
    return tracker.state


# ------------------------------------------------------------------ the sequences


def test_the_change_position_is_the_front_middle_unless_set_and_always_inside():
    assert change_position(BOX, ChangeSettings()) == (110.0, 10.0)
    assert change_position(BOX, ChangeSettings(x=30, y=200)) == (30.0, 200.0)
    assert change_position(BOX, ChangeSettings(x=500, y=-5)) == (220.0, 0.0)


def test_unload_pulls_quickly_first_counts_what_is_retracted_already_and_beeps():
    state = state_after("G1 X10 Y10 Z1 F3000", "G1 E-0.8 F2400")  # the print itself retracted 0.8 mm
    lines = unload_lines(state, plan(retracted=1.2), ChangeSettings(unload_length=100), "marlin")
    assert lines == ["M83", "G1 E-15 F3000", "G1 E-83 F2400", filament.BEEP]
    assert filament.BEEP not in unload_lines(state, plan(flavour="klipper"), ChangeSettings(), "klipper")
    short = unload_lines(state, plan(retracted=1.2), ChangeSettings(unload_length=10), "marlin")
    assert short == ["M83", "G1 E-8 F3000", filament.BEEP]


def test_ready_lines_leave_the_nozzle_as_the_resume_expects_it():
    state = state_after("G1 X10 Y10 Z1 F3000", "G1 E-0.8 F2400")
    # the resume pushes back the pause's own retraction at the print: pull back that and the print's
    assert ready_lines(state, plan(retracted=1.2), MotionSettings(retract_speed=35)) == ["M83", "G1 E-2 F2100"]
    # firmware retraction: the firmware counts itself retracted, the resume's G11 must restore exactly it
    assert ready_lines(state_after("G10"), plan(fw_retract=True), MotionSettings()) == ["G11", "G10"]
    assert ready_lines(state_after(), plan(), MotionSettings()) == []


# ------------------------------------------------------------------ the flow


def changed(make, **kwargs):
    """A rig 300 lines into the print, changing filament for user ann, unloaded and waiting."""
    controller, comm, port, events = rig = make(**kwargs)
    comm.stream(300)
    controller.change_filament(reason="red to blue", source="user:ann")
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    # the events follow the state (on the controller thread): wait for them rather than race them
    assert wait_for(lambda: [name for name, _ in events] == ["paused", "filament_change"]), events
    return rig


def paused_lines(comm):
    return [line for line, tags in comm.wire if TAG_PAUSE in tags]


def test_a_change_parks_at_the_change_position_unloads_and_says_so(make):
    controller, comm, port, events = changed(make)
    lines = paused_lines(comm)
    assert "G1 X110 Y10 F6000" in lines  # the front middle of the 220 x 220 bed, at the travel height
    unload = lines.index("G1 E-15 F3000")
    assert unload > lines.index("G1 X110 Y10 F6000") and lines[unload + 1].startswith("G1 E-")
    assert lines[-1] == "M400"  # parked: only then paused
    state = controller.get_state()
    assert state["change"] == {"step": "unloaded", "purged": 0.0} and state["reason"] == "red to blue"
    assert [name for name, _ in events] == ["paused", "filament_change"]
    assert events[-1][1]["step"] == "unloaded" and events[-1][1]["source"] == "user:ann"
    assert port.printer_state == "paused"  # OctoPrint's pause, as any SafePause pause


def test_purge_loads_once_then_purges_as_often_as_asked_and_resume_goes_back_exactly(make):
    controller, comm, port, events = changed(make)
    controller.purge(10)
    assert wait_for(lambda: controller.get_state()["change"] == {"step": "loaded", "purged": 10.0})
    controller.purge()
    assert wait_for(lambda: controller.get_state()["change"]["purged"] == 40.0)
    lines = paused_lines(comm)
    after_unload = lines[lines.index("M400") + 1 :]
    assert after_unload == ["M83", "G1 E90 F360", "M83", "G1 E10 F180", "M83", "G1 E30 F180"]
    steps = lambda: [e[1]["step"] for e in events if e[0] == "filament_change"]  # noqa: E731
    assert wait_for(lambda: steps() == ["unloaded", "loaded", "loaded"]), steps()

    controller.resume()
    assert wait_resumed(controller, comm)
    resumed = [line for line, tags in comm.wire if TAG_RESUME in tags]
    assert not any(re.fullmatch(r"G1 E9\d(\.\d+)? F360", line) for line in resumed)  # loaded already
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_resume_right_after_the_unload_loads_purges_and_pulls_back_before_the_return(make):
    controller, comm, port, events = changed(make)
    controller.resume()
    assert wait_resumed(controller, comm)
    resumed = [line for line, tags in comm.wire if TAG_RESUME in tags]
    load, purge = resumed.index("G1 E90 F360"), resumed.index("G1 E30 F180")
    returns = [i for i, line in enumerate(resumed) if line.startswith("G1 X") and "Y" in line]
    assert returns[0] < load < purge < returns[-1]  # at the change position, then back to the print
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_purge_after_the_hotend_went_off_heats_and_waits_first(make):
    controller, comm, port, events = changed(make)
    controller._token.heaters.heaters_off = True  # the change's hotend timeout acted
    controller.purge(5)
    assert wait_for(lambda: controller.get_state()["change"]["purged"] == 5.0)
    lines = paused_lines(comm)
    after_unload = lines[lines.index("M400") + 1 :]
    waits = [i for i, line in enumerate(after_unload) if line.startswith("M109")]
    assert waits and waits[0] < after_unload.index("G1 E90 F360")


def test_purge_and_change_are_refused_when_they_do_not_fit(make):
    controller, comm, port, events = make()
    with pytest.raises(Refused, match="not paused for a filament change"):
        controller.purge()
    comm.stream(300)
    controller.pause(source="user:ann")
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    with pytest.raises(Refused, match="not paused for a filament change"):
        controller.purge()
    with pytest.raises(Refused, match="already paused"):
        controller.change_filament()


def test_m600_in_the_file_is_a_change_at_exactly_that_line_and_is_never_sent(make):
    controller, comm, port, events = make(insert="M600", at=400)
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["change"]["step"] == "unloaded" and state["reason"] == "M600 in the file (line 400)"
    assert len(file_lines(comm)) == 399
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    sent = [line for line, _ in file_lines(comm)]
    assert sent == [line for line in expected_file_lines(comm.path) if line != "M600"]


def test_m600_goes_to_the_firmware_when_set_so(make):
    controller, comm, port, events = make(insert="M600", at=400, settings={**SETTINGS, "filament_change": "firmware"})
    comm.stream(450)
    assert controller.state == IDLE and "M600" in [line for line, _ in file_lines(comm)]


def test_a_change_that_ends_badly_is_recovered_from_after_its_m600(make):
    recovery = test_controller.RecordingRecovery()
    controller, comm, port, events = make(insert="M600", at=400, recovery=recovery)
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    after_m600 = test_controller.line_start(comm.path, 401)  # the line after the M600 begins here
    # written at the hold and again once lifted, before anything is unloaded: never the M600 again
    assert recovery.corrections and set(recovery.corrections) == {after_m600}
    port.printer_state = "offline"
    controller.on_printer_event("Disconnected", {})
    assert wait_resumed(controller, comm)
    assert set(recovery.corrections) == {after_m600}


def test_the_recovery_knows_while_the_filament_is_out(make):
    """Killed or disconnected during a change: the recovery must load before it prints. Its record says
    so from the moment the unload goes out until the new filament is loaded."""
    recovery = test_controller.RecordingRecovery()
    controller, comm, port, events = changed(make, recovery=recovery)
    assert recovery.unloaded[0] is False and recovery.unloaded[-1] is True  # the hold, then the unload
    controller.purge(10)
    assert wait_for(lambda: controller.get_state()["change"] == {"step": "loaded", "purged": 10.0})
    assert wait_for(lambda: recovery.unloaded[-1] is False)  # loaded: nothing to load any more
    assert len(set(recovery.corrections)) == 1  # always the held line


def test_cancel_during_a_change_drops_nothing_of_the_file_and_restores_the_modes(make):
    controller, comm, port, events = changed(make)
    controller.cancel()
    assert wait_resumed(controller, comm)
    assert port.cancelled and comm.hold == 0
    assert [name for name, _ in events] == ["paused", "filament_change", "cancelled"]


def test_a_new_materials_temperature_during_the_change_is_undone_by_the_resume(make):
    """The user heats for the new material during the change (OctoPrint's Temperature tab): loading and
    purging run at it, and the resume waits for the print's own temperature before going back."""
    controller, comm, port, events = make()
    comm.stream(2000)  # file 02 after its first layer: hotend 200 °C
    controller.change_filament(source="user:ann")
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    port.temps = {"tool0": {"actual": 240.0, "target": 240.0}, "bed": {"actual": 60.0, "target": 60.0}}
    controller.purge(10)
    assert wait_for(lambda: controller.get_state()["change"]["purged"] == 10.0)
    controller.resume()
    assert wait_resumed(controller, comm)
    resumed = [line for line, tags in comm.wire if TAG_RESUME in tags]
    wait = resumed.index("M109 T0 S200")
    returns = [i for i, line in enumerate(resumed) if line.startswith("G1 X") and "Y" in line]
    assert wait < returns[-1]  # the print's own temperature, before the print goes on
