"""Users' templates at a real pause, on the real MachineCom and virtual printer (issue 11).

A careless admin's template (stored in config.yaml, where nothing validates it) must never keep the
nozzle on the part: a template that loops for ever or one that would drive the head out of the volume
is skipped with a warning, the pause completes (retract, lift, park) and the print resumes with every
file line exactly once. Nothing the check refuses reaches the printer.
"""

from __future__ import annotations

import time

import pytest
from rig import CORPUS_GCODE, LogTrap, check_file_lines, unwire_controller, wire_controller

from octoprint_safepause.core.controller import IDLE, PAUSED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SMALL = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def wait_until(predicate, timeout, what, rig):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout}s; {rig.diagnose()}")
        time.sleep(0.005)


def filepos(rig) -> int:
    return ((rig.comm.getFilePosition() if rig.comm else None) or {}).get("pos", 0)


@pytest.mark.parametrize(
    "template,warning,never_sent",
    [
        (LOOP, "took longer than", None),
        ("G1 X9999 Y-500 Z-20 F6000", "refused by the safety check", "G1 X9999 Y-500 Z-20 F6000"),
        ("M117 hello\n@pause", "refused by the safety check", "@pause"),
    ],
    ids=["endless loop", "out of the volume", "host command"],
)
def test_a_bad_pause_template_is_skipped_and_the_pause_completes(rig, template, warning, never_sent):
    wired = wire_controller(rig, hold_timeout=0.5, pause_template=template)
    controller = wired.controller
    try:
        with LogTrap() as trap:
            rig.print_file(SMALL)
            wait_until(lambda: filepos(rig) > 60_000, 20, "printing", rig)
            asked = time.monotonic()
            controller.pause(reason="test")
            wait_until(lambda: controller.state == PAUSED, 8, "paused", rig)
            # the template's budget (2 s) bounds the pause, never the template
            assert time.monotonic() - asked < 6
            state = controller.get_state()
            assert any(warning in w for w in state["warnings"]), state["warnings"]
            sent = [r.cmd for r in rig.records()]
            assert any(cmd.startswith("G1 Z") for cmd in sent[-12:]), sent[-12:]  # lifted
            if never_sent:
                assert never_sent not in sent
            controller.resume()
            assert rig.wait_done(30) == "PrintDone"
            wait_until(lambda: controller.state == IDLE, 5, "idle", rig)
            report = check_file_lines(rig.records(), SMALL)
            assert report.ok, report
            assert not trap.ours(), "\n".join(trap.ours())
    finally:
        unwire_controller(rig, wired)
