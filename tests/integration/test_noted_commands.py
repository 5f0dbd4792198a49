"""Commands from outside the print file (terminal, other plugins) reach the controller's shadow tracker
through the queuing hook, with the real MachineCom: OctoPrint hands the hook `gcode=None` for Klipper's
extended commands (its regex knows only G/M/T/F codes), so the hook cannot go by that argument alone."""

from __future__ import annotations

import time

import pytest
from rig import CORPUS_GCODE, head_and_tail, unwire_controller, wire_controller

from octoprint_safepause.core.controller import IDLE, PAUSED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KLIPPER = CORPUS_GCODE / "03_klipper_voron_fwretract_G10G11_sphere_0.25mm.gcode"  # no SET_GCODE_OFFSET
TERMINAL_TAGS = {"source:api", "api:printer.command", "trigger:printer.commands"}


def _sent(rig, command):
    return any(r.cmd.startswith(command) for r in rig.records())


def _wait(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


def test_a_klipper_offset_sent_from_the_terminal_enters_the_snapshot(rig, tmp_path):
    printed = head_and_tail(KLIPPER, tmp_path, head_layers=2)
    wired = wire_controller(rig, hold_timeout=0.5, flavour="klipper")
    try:
        controller = wired.controller
        # The printer sits 2 s in the file's M190 (the terminal line waits in OctoPrint's command queue
        # and goes out, through the hook, right after it), then 3 s in its M109 (the pause's fallback
        # hold takes the print there).
        rig.debug("sleep_after_next M190 2")
        rig.debug("sleep_after_next M109 3")
        rig.print_file(printed)
        _wait(lambda: _sent(rig, "M190"), "M190 sent")
        rig.comm.sendCommand("SET_GCODE_OFFSET Z=0.25", tags=set(TERMINAL_TAGS))
        _wait(lambda: _sent(rig, "SET_GCODE_OFFSET") and _sent(rig, "M109"), "offset and M109 sent")
        controller.pause(reason="noted", source="test")
        _wait(lambda: controller.state == PAUSED, "paused")
        offsets = controller.get_state()["snapshot"]["offsets"]
        controller.resume()
        _wait(lambda: controller.state == IDLE, "resumed")
        assert rig.wait_done(30) == "PrintDone"
        assert offsets["Z"] == pytest.approx(0.25)  # the file itself never shifts Z
    finally:
        unwire_controller(rig, wired)
