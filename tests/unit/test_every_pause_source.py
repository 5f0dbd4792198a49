"""Every pause source through SafePause, against the fake comm: OctoPrint's pause states around a
SafePause pause, the file's own pause commands, OctoPrint's own pause taken over, its resume, its
pause scripts. The same paths on OctoPrint's real MachineCom: tests/integration/test_octoprint_pause.py."""

from __future__ import annotations

import pytest

from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_PAUSE, TAG_RESUME

from . import test_controller
from .test_controller import SETTINGS, expected_file_lines, file_lines, wait_for, wait_resumed

make = test_controller.make  # the fixture: test_controller's rig, on a copy of its file

NATIVE_M400_TAGS = {"trigger:comm.set_pause", "trigger:pause", "trigger:record_position", "source:job"}


def paused(make, scripts=None, **kwargs):
    """A rig 300 lines into the print (with the user's OctoPrint `scripts`), paused by user ann."""
    controller, comm, port, events = rig = make(**kwargs)
    port.scripts.update(scripts or {})
    comm.stream(300)
    controller.pause(source="user:ann")
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    return rig


def test_a_safepause_pause_is_octoprints_pause_and_its_resume_octoprints_resume(make):
    controller, comm, port, events = paused(make)
    # Paused for OctoPrint only once the park went out, for the user who asked
    assert port.printer_state == "paused" and port.pause_calls == [("enter", "ann")]
    assert any(TAG_PAUSE in tags for _, tags in comm.wire)

    controller.resume("user:bob")
    assert wait_resumed(controller, comm)
    assert port.pause_calls == [("enter", "ann"), ("leave", "bob")]
    assert port.printer_state == "printing"  # OctoPrint's marker passed once the hold was released
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_octoprints_own_resume_resumes_the_safepause_pause(make):
    controller, comm, port, events = paused(make)
    # OctoPrint's Resume (a plugin's resume_print(), //action:resume): Resuming, then its event
    port.printer_state = "resuming"
    controller.on_printer_event("PrintResumed", {"user": "bob"})
    assert wait_resumed(controller, comm)
    assert [name for name, _ in events] == ["paused", "resumed"]
    assert ("leave", "bob") in port.pause_calls  # nothing to do there: OctoPrint is resuming already
    assert any(TAG_RESUME in tags for _, tags in comm.wire)
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_a_refused_resume_puts_octoprint_back_to_paused(make):
    controller, comm, port, events = paused(make, settings={**SETTINGS, "resume_template": "G1 X{{ nowhere }}"})
    port.printer_state = "resuming"
    controller.on_printer_event("PrintResumed", {"user": "bob"})
    assert wait_for(lambda: "resume template failed" in (controller.get_state()["error"] or ""))
    assert controller.state == PAUSED and comm.hold == 1
    assert port.printer_state == "paused" and port.pause_calls[-1] == ("enter", "ann")


@pytest.mark.parametrize("command", ["M0", "M1", "M25", "@pause", "@PAUSE now"])
def test_the_files_own_pause_command_pauses_exactly_there(make, command):
    controller, comm, port, events = make(insert=command, at=400)
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["source"] == "file" and "line 400" in state["reason"]
    assert state["reason"].startswith(command.split()[0].lower() if command[0] == "@" else command)
    assert state["saved_line"] is None  # nothing held back: the pause command itself is the pause point
    assert len(file_lines(comm)) == 399 and comm.hold == 1
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    sent = [line for line, _ in file_lines(comm)]
    expected = [line for line in expected_file_lines(comm.path) if line != command]
    assert sent == expected  # the command never went out, every other line exactly once


@pytest.mark.parametrize("command", ["PAUSE", "pause"])
def test_klippers_pause_macro_in_the_file_pauses_exactly_there_on_klipper_only(make, command):
    controller, comm, port, events = make(insert=command, at=400, flavour="klipper")
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["source"] == "file" and state["reason"] == "PAUSE in the file (line 400)"
    assert len(file_lines(comm)) == 399 and comm.hold == 1
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == [
        line for line in expected_file_lines(comm.path) if line != command
    ]  # Klipper never got its PAUSE (it would have paused on its own, behind OctoPrint's back)


def test_a_pause_word_on_another_firmware_is_just_a_line(make):
    controller, comm, port, events = make(insert="PAUSE", at=400)  # Marlin: no such command of its own
    comm.stream(450)
    assert controller.state == IDLE and "PAUSE" in [line for line, _ in file_lines(comm)]


def test_the_files_pause_command_is_octoprints_when_take_over_is_off(make):
    controller, comm, port, events = make(insert="M0", at=400, settings={**SETTINGS, "take_over_pause": False})
    comm.stream(450)
    assert controller.state == IDLE and comm.hold == 0
    assert "M0" in [line for line, _ in file_lines(comm)]  # passed on: OctoPrint pauses (and blocks M0)


def test_other_host_commands_in_the_file_are_not_pauses(make):
    controller, comm, port, events = make(insert="@pausing_is_not_this", at=400)
    comm.stream(450)
    assert controller.state == IDLE and len(file_lines(comm)) == 450


def test_octoprints_own_pause_is_taken_over_before_its_m400_goes_out(make):
    controller, comm, port, events = make()
    comm.stream(300)
    # another plugin's printer.pause_print(): OctoPrint turns Pausing and queues M400 in its job queue
    port.printer_state = "pausing"
    tags = NATIVE_M400_TAGS | {"source:plugin", "plugin:detector"}
    assert controller.on_queuing(comm, "queuing", "M400", None, "M400", tags=tags) == (None,)
    assert comm.hold == 1
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["source"] == "plugin:detector" and "plugin detector" in state["reason"]
    assert port.printer_state == "paused" and port.pause_calls == [("enter", None)]
    assert not any(line == "M400" and TAG_PAUSE not in tags for line, tags in comm.wire)
    # its M114 (had it been queued) and any later pause of OctoPrint's while this one lasts: dropped
    assert controller.on_queuing(comm, "queuing", "M114", None, "M114", tags=NATIVE_M400_TAGS) == (None,)
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_octoprints_own_pause_is_left_alone_when_take_over_is_off(make):
    controller, comm, port, events = make(settings={**SETTINGS, "take_over_pause": False})
    comm.stream(300)
    port.printer_state = "pausing"
    assert controller.on_queuing(comm, "queuing", "M400", None, "M400", tags=set(NATIVE_M400_TAGS)) is None
    assert controller.state == IDLE and comm.hold == 0


def test_an_sd_print_keeps_octoprints_pause_and_says_why(make):
    controller, comm, port, events = make()
    port.origin = "sdcard"
    port.printer_state = "pausing"
    assert controller.on_queuing(comm, "queuing", "M400", None, "M400", tags=set(NATIVE_M400_TAGS)) is None
    assert controller.state == IDLE
    assert "SD card" in controller.get_state()["error"]


def test_octoprints_pause_scripts_run_at_the_park_and_are_not_run_twice(make):
    # OctoPrint's documented example parks only when it knows the pause position: SafePause parked
    controller, comm, port, events = paused(
        make,
        scripts={
            "afterPrintPaused": "M117 Paused at Z{{ safepause.position.z }}\n"
            "{% if pause_position.x is not none %}G1 X0 Y0{% endif %}\n",
            "beforePrintResumed": "M117 Resuming\n",
        },
    )
    pause_lines = [line for line, tags in comm.wire if TAG_PAUSE in tags]
    z = controller.get_state()["position"]["z"]
    assert pause_lines[-2:] == [f"M117 Paused at Z{z}", "M400"] and "G1 X0 Y0" not in pause_lines  # M400: parked
    # OctoPrint's own copies, queued behind the hold by its resume, are dropped when they arrive
    script_tags = {"source:script", "script:beforePrintResumed", "source:job"}
    assert controller.on_queuing(comm, "queuing", "M117 Resuming", None, "M117", tags=script_tags) == (None,)
    controller.resume()
    assert wait_resumed(controller, comm)
    resumed = [line for line, tags in comm.wire if TAG_RESUME in tags]
    returns = [i for i, line in enumerate(resumed) if line.startswith(("G0", "G1")) and " X" in line]
    assert returns[0] < resumed.index("M117 Resuming") < returns[-1]  # at the park, before the return
    assert controller.on_queuing(comm, "queuing", "M117 Resuming", None, "M117", tags=script_tags) == (None,)
    controller.on_printer_event("PrinterStateChanged", {"state_id": "PRINTING"})
    assert wait_for(lambda: controller.on_queuing(comm, "queuing", "M117", None, "M117", tags=script_tags) is None)


def test_a_pause_script_the_safety_check_refuses_is_skipped_with_a_warning(make):
    controller, comm, port, events = paused(make, scripts={"afterPrintPaused": "G1 Z-5\n"})  # into the bed
    warnings = controller.get_state()["warnings"]
    assert any("afterPrintPaused script skipped, refused by the safety check" in w for w in warnings)
    assert "G1 Z-5" not in [line for line, _ in comm.wire]


def test_octoprints_pause_scripts_are_left_to_octoprint_when_switched_off(make):
    controller, comm, port, events = paused(
        make, scripts={"afterPrintPaused": "M117 Paused\n"}, settings={**SETTINGS, "run_octoprint_scripts": False}
    )
    assert "M117 Paused" not in [line for line, _ in comm.wire]
