"""PauseController against a fake comm: the state machine, the hold counter and exactly-once lines."""

from __future__ import annotations

import random
import shutil
import threading
import time
from types import SimpleNamespace

import pytest

from octoprint_safepause.core.controller import (
    IDLE,
    PAUSED,
    PAUSING,
    TAG_PAUSE,
    TAG_RESEND,
    TAG_RESUME,
    PauseController,
    Refused,
)

from ..corpus import GCODE_DIR
from ..wire_checks import (
    LineLedger,
    assert_reheated_before_extruding,
    fileline_of,
    last_s_value,
)
from .fake_printer import FakeComm, FakePort

SHARED = GCODE_DIR
FILE = SHARED / "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"


def wait_resumed(controller, comm, holds: int = 0, timeout=5.0):
    """Idle with OctoPrint's job hold given back (`holds`: what others hold): a pause turns idle a moment
    before it gives its count back, so that a stop on the very next line is taken."""
    return wait_for(lambda: controller.state == IDLE and comm.hold == holds, timeout)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


SETTINGS = {"park_x": 0.0, "park_y": 0.0, "lift": 5.0}


def build(
    tmp_path, settings=None, port_class=FakePort, hold_timeout=0.3, recovery=None, insert=None, at=400, flavour="marlin"
):
    """A started controller on a FakeComm streaming a copy of FILE (with `insert`, a line, put in as file
    line `at`): (controller, comm, port, events)."""
    path = tmp_path / "part.gcode"
    shutil.copy(FILE, path)
    if insert is not None:
        lines, counted = path.read_text().splitlines(keepends=True), 0
        for index, raw in enumerate(lines):
            counted += bool(raw.split(";", 1)[0].strip())
            if counted == at:
                lines.insert(index, insert + "\n")
                break
        path.write_text("".join(lines))
    events = []
    values = dict(SETTINGS if settings is None else settings)
    controller = PauseController(port=None, hold_timeout=hold_timeout)
    comm = FakeComm(str(path), controller)
    port = port_class(comm, {"volume": {"width": 220, "depth": 220, "height": 250}})
    controller.bind(
        port,
        emit=lambda name, payload: events.append((name, payload)),
        settings=lambda: dict(values),
        flavour=lambda: flavour,
        recovery=recovery,
    )
    controller.start()
    return controller, comm, port, events


@pytest.fixture
def rig(tmp_path):
    made = build(tmp_path)
    yield made
    made[0].stop()


@pytest.fixture
def make(tmp_path):
    """build() with other settings, port or recovery; stopped after the test."""
    made = []

    def make_one(**kwargs):
        made.append(build(tmp_path, **kwargs))
        return made[-1]

    yield make_one
    for controller, *_ in made:
        controller.stop()


def file_lines(comm):
    return [(line, tags) for line, tags in comm.wire if "source:file" in tags]


def line_start(path, number):
    """Byte offset at which file line `number` (OctoPrint's numbering: comment-only and blank lines are
    not counted) starts."""
    offset = counted = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.split(b";", 1)[0].strip():
                counted += 1
                if counted == number:
                    return offset
            offset += len(raw)
    raise ValueError(f"{path} has only {counted} file lines")


def expected_file_lines(path):
    out = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for raw in handle:
            stripped = raw.split(";", 1)[0].strip()
            if stripped:
                out.append(stripped)
    return out


def test_pause_suppresses_one_line_holds_and_resume_sends_it_once(rig):
    controller, comm, port, events = rig
    comm.stream(500)
    controller.pause(reason="spaghetti", source="test")
    assert controller.state == PAUSING
    comm.stream()  # the hook suppresses the next file line and takes the hold itself
    assert comm.hold == 1
    assert wait_for(lambda: controller.state == PAUSED)
    assert len(file_lines(comm)) == 500
    pause_lines = [line for line, tags in comm.wire if TAG_PAUSE in tags]
    assert any(line.startswith("G1 Z") for line in pause_lines)
    state = controller.get_state()
    assert state["reason"] == "spaghetti" and state["saved_line"]
    assert events[-1][0] == "paused" and events[-1][1]["reason"] == "spaghetti"

    controller.resume()
    assert wait_resumed(controller, comm)
    assert comm.hold == 0
    tail = comm.wire[-1]
    assert TAG_RESEND in tail[1] and "source:file" in tail[1]
    assert any(TAG_RESUME in tags for _, tags in comm.wire)
    comm.stream()
    sent = [line for line, _ in file_lines(comm)]
    assert sent == expected_file_lines(comm.path)
    assert [name for name, _ in events] == ["paused", "resumed"]


def test_snapshot_is_the_state_after_the_last_line_sent(rig):
    from octoprint_safepause.core.gcode import StateTracker

    controller, comm, port, _ = rig
    comm.stream(2000)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    reference = StateTracker()
    for line, _ in file_lines(comm):
        reference.feed(line)
    snap = controller.get_state()["snapshot"]
    ref = reference.state
    assert (snap["x"], snap["y"], snap["z"], snap["e"]) == (ref.x, ref.y, ref.z, ref.e)
    assert snap["relative_e"] == ref.relative_e


def test_noted_terminal_commands_enter_the_snapshot(rig):
    controller, comm, port, _ = rig
    comm.stream(1500)
    comm.command("M106 S77", {"source:api", "api:printer.command"})
    comm.command("M104 S215", {"source:api"})
    comm.stream(3)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    snap = controller.get_state()["snapshot"]
    # the snapshot is PrinterState.as_dict(): JSON-ready, so its mapping keys are strings
    assert snap["fans"]["0"] == 77
    assert snap["tool_temps"]["0"] == 215


def test_fallback_takes_the_hold_when_no_file_line_comes(rig):
    controller, comm, port, _ = rig
    comm.stream(300)
    controller.pause()
    # no streaming: as if the printer sat in a long M109
    assert wait_for(lambda: controller.state == PAUSED, timeout=3)
    assert comm.hold == 1
    assert controller.get_state()["saved_line"] is None
    controller.resume()
    assert wait_resumed(controller, comm)
    assert comm.hold == 0
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(comm.path)


def test_cancel_while_paused_drops_the_line_restores_modes_and_releases(rig):
    controller, comm, port, events = rig
    comm.stream(800)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    saved = controller.get_state()["saved_line"]
    expected = expected_file_lines(comm.path)
    assert saved == expected[800]  # the 801st line: the one the hook suppressed
    controller.cancel()
    assert wait_resumed(controller, comm)
    assert port.cancelled and comm.hold == 0
    cancel_lines = [line for line, tags in comm.wire if "safepause:cancel" in tags]
    assert cancel_lines[:2] == ["G90", "M83"]  # the print's modes, XYZ first
    assert not any(TAG_RESEND in tags for _, tags in comm.wire)
    assert [line for line, _ in file_lines(comm)] == expected[:800]  # the saved line never went out
    assert events[-1][0] == "cancelled"


def test_octoprint_cancel_during_hold_goes_through_our_cancel_path(rig):
    controller, comm, port, events = rig
    comm.stream(100)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    port.printer_state = "cancelling"
    controller.on_printer_event("PrintCancelling", {})
    assert wait_resumed(controller, comm)
    assert comm.hold == 0 and not port.cancelled  # OctoPrint was already cancelling


def test_refusals(rig):
    controller, comm, port, _ = rig
    with pytest.raises(Refused, match="not paused"):
        controller.resume()
    with pytest.raises(Refused, match="nothing to cancel"):
        controller.cancel()
    port.printer_state = "paused"
    with pytest.raises(Refused, match="paused by OctoPrint, not by SafePause"):
        controller.pause()
    port.printer_state = "operational"
    with pytest.raises(Refused, match="not printing"):
        controller.pause()
    port.printer_state = "printing"
    port.origin = "sdcard"
    with pytest.raises(Refused, match="SD card"):
        controller.pause()
    port.origin = "local"
    comm.stream(10)
    controller.pause()
    with pytest.raises(Refused, match="already pausing"):
        controller.pause()
    assert controller.try_(controller.pause) is False
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    controller.resume()
    assert wait_resumed(controller, comm)


def test_disconnect_during_hold_ends_it_without_raising(rig):
    controller, comm, port, events = rig
    comm.stream(50)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    port.hold_raises = True
    port.printer_state = "offline"
    controller.on_printer_event("Disconnected", {})
    assert wait_for(lambda: controller.state == IDLE)  # (the hold went with the connection)
    assert "Disconnected" in controller.get_state()["error"]
    assert not controller.holding


def test_print_ending_before_the_pause_took_effect(rig):
    controller, comm, port, _ = rig
    comm.stream(10)
    controller.pause()
    port.printer_state = "operational"  # the last line went out and the job finished
    assert wait_for(lambda: controller.state == IDLE, timeout=3)
    assert comm.hold == 0
    assert "no longer running" in controller.get_state()["error"]


def test_another_plugins_hold_is_left_alone(rig):
    controller, comm, port, _ = rig
    comm.stream(20)
    comm.set_job_on_hold(True)  # someone else holds the job
    controller.pause()
    assert wait_for(lambda: controller.state == PAUSED, timeout=3)
    assert comm.hold == 2
    controller.resume()
    assert wait_resumed(controller, comm, holds=1)  # the other plugin's count stays


def test_random_requests_from_many_threads_never_leak_or_double_release(rig):
    """Pause / resume / cancel from four threads while a fifth streams the file (the fake cancel does not
    end the job, so the stream goes on after each one). Then the rest of the file is streamed: every file
    line reached the printer exactly once and in order, except the lines the hook saved whose pause was
    cancelled, each cancel reporting how many it dropped (tests/wire_checks.LineLedger)."""
    controller, comm, port, _ = rig
    ledger = LineLedger()
    comm.controller = SimpleNamespace(on_queuing=ledger.hook(controller.on_queuing))  # what the comm calls
    rng = random.Random(7)
    stop = threading.Event()

    def streamer():
        while not stop.is_set() and not comm.done:
            comm.stream(5)
            time.sleep(0.0005)

    def requester(seed):
        local = random.Random(seed)
        while not stop.is_set():
            action = local.choice([controller.pause, controller.resume, controller.cancel])
            controller.try_(action)
            time.sleep(local.random() * 0.01)
            if port.printer_state == "cancelling":
                port.printer_state = "printing"  # the fake cancel does not end the job

    threads = [threading.Thread(target=streamer)] + [
        threading.Thread(target=requester, args=(rng.random(),)) for _ in range(4)
    ]
    with ledger.listening(controller._log):
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # the length of the random phase, not a wait for a condition
        stop.set()
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive(), "deadlock"
        # the last request may have left a pause on its way (pausing goes on to paused or, at the end
        # of the file, to the fallback hold) or a resume/cancel under way: any of them ends idle or paused
        assert wait_for(lambda: controller.state in (IDLE, PAUSED), timeout=5), controller.state
        if controller.state == PAUSED:
            controller.resume()
            assert wait_resumed(controller, comm)
        assert comm.hold == 0
        port.printer_state = "printing"
        comm.stream()  # the rest of the file
    assert comm.done and comm.hold == 0
    expected = expected_file_lines(comm.path)
    delivered = [(fileline_of(tags), line) for line, tags in file_lines(comm)]
    problems = ledger.problems([n for n, _ in delivered], total=len(expected))
    assert not problems, f"{problems} ({ledger.summary()})"
    wrong = [(n, line, expected[n - 1]) for n, line in delivered if line != expected[n - 1]]
    assert not wrong, f"delivered text differs from the file: {wrong[:5]}"
    assert ledger.drops, f"no cancel dropped a saved line: the test did not exercise its claim ({ledger.summary()})"
    print("random requests:", ledger.summary())


def test_commands_after_the_print_ended_are_not_noted(rig):
    """The cancel script goes out after the print while its file is still selected: it must not enter
    the next print's state (M104 S0 would make the next pause skip its retract)."""
    controller, comm, port, _ = rig
    comm.stream(1500)
    port.printer_state = "cancelling"  # OctoPrint left the print's own states
    comm.command("M104 T0 S0", {"source:job", "script:afterPrintCancelled"})
    port.printer_state = "printing"
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    target = last_s_value(expected_file_lines(comm.path)[:1500], ("M104", "M109"))
    assert target == 200  # file 02 sets 200 after its first layer
    assert controller.get_state()["snapshot"]["tool_temps"] == {"0": target}
    state, plan = controller.current_pause()
    assert state.tool_temps == {0: target}
    assert any(line.startswith("G1 E-") for line in plan.lines), plan.lines  # hot: it retracts


def test_cancel_while_waiting_for_the_hold_acts_at_once(rig):
    controller, comm, port, events = rig
    controller.hold_timeout = 5.0  # as if the printer sat in a long M109: no file line comes
    comm.stream(100)
    controller.pause()
    started = time.monotonic()
    controller.cancel()
    assert wait_for(lambda: controller.state == IDLE, timeout=2)
    assert time.monotonic() - started < 2
    assert port.cancelled and comm.hold == 0
    assert not any("safepause:cancel" in tags and line.startswith("G9") for line, tags in comm.wire)
    assert events[-1][0] == "cancelled"


def test_too_many_outside_commands_are_reported_not_hidden(rig, monkeypatch):
    import octoprint_safepause.core.shadow as shadow_module

    monkeypatch.setattr(shadow_module, "MAX_NOTES", 2)
    controller, comm, port, _ = rig
    comm.stream(200)
    for speed in (10, 20, 30):
        comm.command(f"M106 S{speed}", {"source:api"})
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    assert any("commands from outside the file" in w for w in controller.get_state()["warnings"])


class ReadsALineAtCancelPort(FakePort):
    """OctoPrint reads the next file line while SafePause's cancel goes in: the printer answers the long
    M109 (or G4) that kept the pause waiting for its hold just as the cancel is asked for. Until its own
    cancel changes its state, nothing stops OctoPrint from reading that line."""

    def cancel(self, tags):
        self.comm.stream(1)
        super().cancel(tags)


class RecordingRecovery:
    """The controller's view of RecoveryService: where it was told a held print really stands."""

    def __init__(self):
        self.corrections: list[int] = []
        self.unloaded: list[bool] = []  # each correction's: the filament was out for a change

    def correct_position(self, origin, path, pos, z=None, unloaded=False):
        self.corrections.append(pos)
        self.unloaded.append(unloaded)
        return True

    def shadow_start(self, origin, path, *, flavour, tools):
        return None  # not a print recover() started

    def note_progress(self, origin, path, pos):
        pass


def test_a_line_read_while_a_cancel_during_pausing_goes_in_is_not_lost_silently(make):
    """A SafePause cancel while the pause still waits for its hold (no file line came yet). If OctoPrint
    reads a file line right then, the armed hook saves it: either it goes out, or the cancel reports it
    dropped and points the recovery at it; never a line that vanishes (OctoPrint's recorded position is
    after it, so a recovery would skip it)."""
    recovery = RecordingRecovery()
    controller, comm, port, events = make(port_class=ReadsALineAtCancelPort, hold_timeout=10.0, recovery=recovery)
    ledger = LineLedger()
    comm.controller = SimpleNamespace(on_queuing=ledger.hook(controller.on_queuing))
    with ledger.listening(controller._log):
        comm.stream(100)
        controller.pause()
        controller.cancel()  # the wait for the hold (10 s) ends at once
        assert wait_for(lambda: controller.state == IDLE, timeout=10), controller.state
    assert port.cancelled and comm.hold == 0 and not controller.holding
    assert [name for name, _ in events] == ["cancelled"]
    assert ledger.saved == [101], "the test seam moved: the line read at the cancel was not saved"
    delivered = [fileline_of(tags) for _, tags in file_lines(comm)]
    problems = ledger.problems(delivered)
    assert not problems, f"{problems} ({ledger.summary()})"
    if 101 not in delivered:
        # dropped: OctoPrint's position is after line 101; the recovery must start where it starts
        assert recovery.corrections[-1:] == [line_start(comm.path, 101)], recovery.corrections


# ---------------------------------------------------------------------------------------------------------
# resume after the heaters went off: reheat and wait before any extrusion

COOLED_HOTEND = {"tool0": {"actual": 60.0, "target": 0.0}, "bed": {"actual": 60.0, "target": 60.0}}
COOLED_BED = {"tool0": {"actual": 200.0, "target": 200.0}, "bed": {"actual": 30.0, "target": 0.0}}
REHEAT_CASES = {
    # name: (setting overrides, OctoPrint's temperatures at resume, policy lines during the hold, waits)
    "hotend off by the policy": ({"hotend_off_after": 0.001}, {}, ["M104 T0 S0"], ["M109"]),
    "hotend and bed off by the policy": (
        {"hotend_off_after": 0.001, "bed_off_after": 0.001},
        {},
        ["M104 T0 S0", "M140 S0"],
        ["M109", "M190"],
    ),
    # the policy never fires (0 = never); a firmware idle timeout or a user switched a heater off
    "hotend off behind the policy's back": ({"hotend_off_after": 0}, COOLED_HOTEND, [], ["M109"]),
    "bed off behind the policy's back": ({"hotend_off_after": 0}, COOLED_BED, [], ["M190"]),
}


@pytest.mark.parametrize("case", list(REHEAT_CASES))
def test_resume_after_the_heaters_went_off_waits_for_the_prints_temperatures_before_extruding(make, case):
    """The hold outlived the heaters (the long-hold policy, or someone behind its back): the resume lines
    wait for the print's own targets (M109, and M190 for the bed) before the first line that pushes
    filament (an E move forward or G11, followed by an independent model) and before the saved line."""
    overrides, temperatures, went_off, waits = REHEAT_CASES[case]
    controller, comm, port, _events = make(settings={**SETTINGS, **overrides})
    comm.stream(2000)
    printed = [line for line, _ in file_lines(comm)]
    targets = {
        "M109": last_s_value(printed, ("M104", "M109")),
        "M190": last_s_value(printed, ("M140", "M190")),
    }
    assert targets == {"M109": 200, "M190": 60}  # file 02 after its first layer
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED, timeout=10)
    if went_off:
        assert wait_for(lambda: controller.get_state()["heaters_off"], timeout=15), controller.get_state()
        held = [line for line, tags in comm.wire if TAG_PAUSE in tags]
        assert held[-len(went_off) :] == went_off, held  # the policy's lines, after the pause lines
    port.temps = temperatures
    controller.resume()
    assert wait_for(lambda: controller.state == IDLE, timeout=10)
    lines = [line for line, _ in comm.wire]
    first_resume = next(i for i, (_, tags) in enumerate(comm.wire) if TAG_RESUME in tags)
    resend = next(i for i, (_, tags) in enumerate(comm.wire) if TAG_RESEND in tags)
    assert_reheated_before_extruding(lines, first_resume, resend, targets, waits)


def test_resume_with_the_heaters_untouched_does_not_wait_for_them(make):
    """The other side of the case above: a short hold, heaters on their targets: no M109 / M190 (Marlin
    would sit out its residency time for nothing)."""
    controller, comm, port, _events = make(settings={**SETTINGS, "hotend_off_after": 0})
    comm.stream(2000)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED, timeout=10)
    port.temps = {"tool0": {"actual": 200.0, "target": 200.0}, "bed": {"actual": 60.0, "target": 60.0}}
    controller.resume()
    assert wait_for(lambda: controller.state == IDLE, timeout=10)
    restore = [line for line, tags in comm.wire if TAG_RESUME in tags]
    assert restore and not [line for line in restore if line.startswith(("M109", "M190", "M116"))], restore
