"""A SafePause pause is OctoPrint's pause, on OctoPrint's real MachineCom and Printer (issue 14).

OctoPrint's state is Paused while SafePause holds, PrintPaused / PrintResumed fire once each, in order;
OctoPrint's own resume resumes; every pause source is a SafePause pause: another plugin's
`printer.pause_print()`, the printer's `//action:pause`, the file's `M0` and `@pause`; OctoPrint's
pause scripts run at the park, once; an SD card print keeps OctoPrint's own pause. The REST and
browser view of the same: tests/e2e/test_octoprint_pause.py.
"""

from __future__ import annotations

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    check_pause_placement,
    head_and_tail,
    octoprint_blocks,
    unwire_controller,
    wire_controller,
)

from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_PAUSE, TAG_RESEND, TAG_RESUME

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SMALL = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"
PAUSE_EVENTS = ("PrintPaused", "PrintResumed")


@pytest.fixture
def wired(rig):
    made = []

    def make(**settings):
        made.append(wire_controller(rig, port=rig.port(), hold_timeout=0.5, **settings))
        return made[-1]

    yield make
    for w in made:
        unwire_controller(rig, w)


@pytest.fixture
def scripts(rig):
    """The user's OctoPrint scripts for one test (emptied again after it)."""
    saved = []

    def save(name, text):
        rig.save_script(name, text)
        saved.append(name)

    yield save
    for name in saved:
        rig.save_script(name, "")


def with_lines(source, tmp_path, inserts: dict[int, str]):
    """A copy of `source` with a line put in before each given file line number (OctoPrint's count)."""
    out, counted = [], 0
    for raw in source.read_text().splitlines(keepends=True):
        if raw.split(";", 1)[0].strip():
            counted += 1
            if counted in inserts:
                out.append(inserts[counted] + "\n")
        out.append(raw)
    path = tmp_path / f"with_pauses_{source.name}"
    path.write_text("".join(out))
    return path


def pause_events(rig):
    return [(name, payload) for name, payload in rig.fired() if name in PAUSE_EVENTS]


def octoprint_flags(rig):
    return rig.printer.get_current_data()["state"]["flags"]


def print_short(rig, tmp_path):
    """The first 20 layers of SMALL (and its end), printing, 30 kB in."""
    short = head_and_tail(SMALL, tmp_path, head_layers=20)
    rig.print_file(short)
    rig.wait_for(lambda: (rig.comm.getFilePosition() or {}).get("pos", 0) > 30_000, timeout=20)
    return short


def wait_paused(rig, controller):
    rig.wait_for(lambda: controller.state == PAUSED, timeout=15)
    assert rig.state_id() == "PAUSED" and rig.hold_count() == 1


def finish(rig, controller, path, saved_lines, trap, not_sent=()):
    """The print ran to its end: every file line once and in order (but `not_sent` and what OctoPrint
    blocks itself), SafePause's lines where they belong."""
    assert rig.wait_done(30) == "PrintDone"
    rig.wait_for(lambda: controller.state == IDLE, timeout=5)
    assert rig.hold_count() == 0
    records = rig.records()
    report = check_file_lines(records, path, suppressed=lambda cmd: octoprint_blocks(cmd) or cmd in not_sent)
    assert report.ok, report
    problems = check_pause_placement(records, saved_lines)
    assert not problems, problems
    assert not trap.ours(), "\n".join(trap.ours())
    return records


def test_octoprint_says_paused_and_its_own_resume_resumes(rig, wired, tmp_path):
    controller = wired().controller
    with LogTrap() as trap:
        short = print_short(rig, tmp_path)
        controller.pause(reason="spaghetti", source="user:ann")
        wait_paused(rig, controller)
        flags = octoprint_flags(rig)
        assert flags["paused"] and not flags["printing"] and not flags["pausing"]
        paused = rig.wait_event("PrintPaused")
        assert paused["user"] == "ann" and paused["path"] == short.name and paused["origin"] == "local"
        # OctoPrint parks nothing itself: no M400/M114 of its own pause went out
        assert not [r for r in rig.records() if "trigger:pause" in (r.tags or ())]
        saved = controller.get_state()["saved_line"]

        rig.printer.resume_print(user="bob")  # OctoPrint's own Resume, as its button calls it
        rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        rig.wait_state("PRINTING", timeout=10)
        records = finish(rig, controller, short, [saved], trap)
    assert [name for name, _ in pause_events(rig)] == ["PrintPaused", "PrintResumed"]
    assert pause_events(rig)[1][1]["user"] == "bob"
    assert [r.cmd for r in records if TAG_RESEND in (r.tags or ())] == [saved]


def test_another_plugins_pause_print_is_a_safepause_pause(rig, wired, tmp_path):
    controller = wired().controller
    detector = rig.plugin_printer("detector")
    with LogTrap() as trap:
        short = print_short(rig, tmp_path)
        detector.pause_print()
        wait_paused(rig, controller)
        state = controller.get_state()
        assert state["source"] == "plugin:detector" and "plugin detector" in state["reason"]
        assert state["saved_line"] is None  # the print stopped where OctoPrint stopped reading
        assert any(TAG_PAUSE in (r.tags or ()) for r in rig.records())  # SafePause parked
        assert not [r for r in rig.records() if "trigger:pause" in (r.tags or ())]  # OctoPrint's M400 dropped
        detector.resume_print()
        rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        finish(rig, controller, short, [None], trap)
    assert [name for name, _ in pause_events(rig)] == ["PrintPaused", "PrintResumed"]


def test_the_printers_action_pause_is_a_safepause_pause(rig, wired, tmp_path):
    controller = wired().controller
    with LogTrap() as trap:
        short = print_short(rig, tmp_path)
        rig.debug("action_pause")  # the virtual printer sends "// action:pause", as a runout sensor would
        wait_paused(rig, controller)
        assert controller.get_state()["source"] == "printer"
        rig.debug("action_resume")  # and "// action:resume" from the printer's menu
        rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        finish(rig, controller, short, [None], trap)
    assert [name for name, _ in pause_events(rig)] == ["PrintPaused", "PrintResumed"]


def test_the_files_m0_and_at_pause_pause_exactly_there(rig, wired, tmp_path):
    controller = wired().controller
    base = head_and_tail(SMALL, tmp_path, head_layers=20)
    path = with_lines(base, tmp_path, {900: "M0", 1400: "@pause"})
    with LogTrap() as trap:
        rig.print_file(path)
        for command, line in (("M0", 900), ("@pause", 1401)):  # numbered in the new file: M0 is line 900
            wait_paused(rig, controller)
            state = controller.get_state()
            assert state["source"] == "file" and state["reason"] == f"{command} in the file (line {line})"
            file_records = [r for r in rig.records() if r.fileline is not None]
            assert file_records[-1].fileline == line - 1  # nothing after the pause command went out
            rig.printer.resume_print()
            rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        records = finish(rig, controller, path, [None, None], trap, not_sent=("M0", "@pause"))
    assert not [r for r in records if r.cmd in ("M0", "@pause")]
    assert [name for name, _ in pause_events(rig)] == ["PrintPaused", "PrintResumed"] * 2


def test_klippers_pause_macro_in_the_file_pauses_exactly_there(rig, wired, tmp_path):
    """On Klipper a slicer's "pause print" is its PAUSE macro: held back by SafePause at that line as M0
    is elsewhere, never sent (Klipper would pause on its own while OctoPrint went on sending)."""
    controller = wired(flavour="klipper").controller
    base = head_and_tail(SMALL, tmp_path, head_layers=20)
    path = with_lines(base, tmp_path, {900: "PAUSE"})
    with LogTrap() as trap:
        rig.print_file(path)
        wait_paused(rig, controller)
        state = controller.get_state()
        assert state["source"] == "file" and state["reason"] == "PAUSE in the file (line 900)"
        file_records = [r for r in rig.records() if r.fileline is not None]
        assert file_records[-1].fileline == 899  # nothing after the pause command went out
        rig.printer.resume_print()
        rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        records = finish(rig, controller, path, [None], trap, not_sent=("PAUSE",))
    assert not [r for r in records if r.cmd == "PAUSE"]
    assert [name for name, _ in pause_events(rig)] == ["PrintPaused", "PrintResumed"]


def test_octoprints_pause_scripts_run_once_at_the_park(rig, wired, scripts, tmp_path):
    scripts(
        "afterPrintPaused",
        "M117 Paused at Z{{ safepause.position.z }}\n"
        "{% if pause_position.x is not none %}\nG1 X0 Y0\n{% endif %}\n",
    )
    scripts("beforePrintResumed", "M117 Resuming\n")
    controller = wired().controller
    with LogTrap() as trap:
        short = print_short(rig, tmp_path)
        controller.pause(source="user:ann")
        wait_paused(rig, controller)
        z = controller.get_state()["position"]["z"]
        saved = controller.get_state()["saved_line"]
        rig.printer.resume_print()  # OctoPrint queues its beforePrintResumed: SafePause drops that copy
        rig.wait_for(lambda: controller.state == IDLE, timeout=10)
        records = finish(rig, controller, short, [saved], trap)
    texts = [r.cmd for r in records]
    assert texts.count(f"M117 Paused at Z{z}") == 1 and texts.count("M117 Resuming") == 1
    assert "G1 X0 Y0" not in texts  # the documented script's own park stays out: SafePause parked
    paused_at = texts.index(f"M117 Paused at Z{z}")
    resuming_at = texts.index("M117 Resuming")
    resent_at = next(i for i, r in enumerate(records) if TAG_RESEND in (r.tags or ()))
    assert TAG_PAUSE in records[paused_at].tags and TAG_RESUME in records[resuming_at].tags
    assert paused_at < resuming_at < resent_at


def test_an_sd_print_keeps_octoprints_own_pause_and_says_why(rig, wired, tmp_path):
    controller = wired().controller
    short = head_and_tail(SMALL, tmp_path, head_layers=30)
    rig.print_sd(short)
    rig.wait_state("PRINTING", timeout=10)
    rig.plugin_printer("detector").pause_print()
    rig.wait_state("PAUSED", timeout=15)
    assert controller.state == IDLE and rig.hold_count() == 0
    assert "SD card" in (controller.get_state()["error"] or "")
    rig.cancel()
    rig.wait_state("OPERATIONAL", timeout=15)
