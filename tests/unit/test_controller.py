"""PauseController against a fake comm: the state machine, the hold counter and exactly-once lines."""

from __future__ import annotations

import random
import shutil
import threading
import time

import pytest

from octoprint_safepause.controller import (
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
from .fake_printer import FakeComm, FakePort

SHARED = GCODE_DIR
FILE = SHARED / "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def rig(tmp_path):
    path = tmp_path / "part.gcode"
    shutil.copy(FILE, path)
    events = []
    controller = PauseController(port=None, hold_timeout=0.3)
    comm = FakeComm(str(path), controller)
    port = FakePort(comm, {"volume": {"width": 220, "depth": 220, "height": 250}})
    controller.bind(
        port,
        emit=lambda name, payload: events.append((name, payload)),
        settings=lambda: {"park_x": 0.0, "park_y": 0.0, "lift": 5.0},
    )
    controller.start()
    yield controller, comm, port, events
    controller.stop()


def file_lines(comm):
    return [(line, tags) for line, tags in comm.wire if "source:file" in tags]


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
    assert wait_for(lambda: controller.state == IDLE)
    assert comm.hold == 0
    tail = comm.wire[-1]
    assert TAG_RESEND in tail[1] and "source:file" in tail[1]
    assert any(TAG_RESUME in tags for _, tags in comm.wire)
    comm.stream()
    sent = [line for line, _ in file_lines(comm)]
    assert sent == expected_file_lines(comm.path)
    assert [name for name, _ in events] == ["paused", "resumed"]


def test_snapshot_is_the_state_after_the_last_line_sent(rig):
    from octoprint_safepause.gcode import StateTracker

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
    assert snap["fans"]["0"] == 77 or snap["fans"].get(0) == 77
    temps = snap["tool_temps"]
    assert temps.get("0", temps.get(0)) == 215


def test_fallback_takes_the_hold_when_no_file_line_comes(rig):
    controller, comm, port, _ = rig
    comm.stream(300)
    controller.pause()
    # no streaming: as if the printer sat in a long M109
    assert wait_for(lambda: controller.state == PAUSED, timeout=3)
    assert comm.hold == 1
    assert controller.get_state()["saved_line"] is None
    controller.resume()
    assert wait_for(lambda: controller.state == IDLE)
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
    controller.cancel()
    assert wait_for(lambda: controller.state == IDLE)
    assert port.cancelled and comm.hold == 0
    cancel_lines = [line for line, tags in comm.wire if "safepause:cancel" in tags]
    assert cancel_lines[:2] == ["G90", "M83"]  # the print's modes, XYZ first
    assert not any(TAG_RESEND in tags for _, tags in comm.wire)
    assert saved not in [line for line, _ in file_lines(comm)[800:]]
    assert events[-1][0] == "cancelled"


def test_octoprint_cancel_during_hold_goes_through_our_cancel_path(rig):
    controller, comm, port, events = rig
    comm.stream(100)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    port.printer_state = "cancelling"
    controller.on_printer_event("PrintCancelling", {})
    assert wait_for(lambda: controller.state == IDLE)
    assert comm.hold == 0 and not port.cancelled  # OctoPrint was already cancelling


def test_refusals(rig):
    controller, comm, port, _ = rig
    with pytest.raises(Refused, match="not paused"):
        controller.resume()
    with pytest.raises(Refused, match="nothing to cancel"):
        controller.cancel()
    port.printer_state = "paused"
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
    assert wait_for(lambda: controller.state == IDLE)


def test_disconnect_during_hold_ends_it_without_raising(rig):
    controller, comm, port, events = rig
    comm.stream(50)
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    port.hold_raises = True
    port.printer_state = "offline"
    controller.on_printer_event("Disconnected", {})
    assert wait_for(lambda: controller.state == IDLE)
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
    assert wait_for(lambda: controller.state == IDLE)
    assert comm.hold == 1


def test_random_requests_from_many_threads_never_leak_or_double_release(rig):
    controller, comm, port, _ = rig
    rng = random.Random(7)
    stop = threading.Event()
    lines_lock = threading.Lock()

    def streamer():
        while not stop.is_set() and not comm.done:
            with lines_lock:
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
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive(), "deadlock"
    assert wait_for(lambda: controller.state in (IDLE, PAUSED), timeout=5)
    if controller.state == PAUSED:
        controller.resume()
        assert wait_for(lambda: controller.state == IDLE)
    assert comm.hold == 0
    # cancels drop their saved line, but no file line may ever go out twice or out of order
    positions = [int(next(t for t in tags if t.startswith("filepos:"))[8:]) for _, tags in file_lines(comm)]
    assert positions == sorted(set(positions))


def test_commands_after_the_print_ended_are_not_noted(rig):
    """The cancel script goes out after the print while its file is still selected: it must not enter
    the next print's state (M104 S0 would make the next pause skip its retract)."""
    controller, comm, port, _ = rig
    comm.stream(1500)
    comm.done = True  # the comm left the printing states
    comm.command("M104 T0 S0", {"source:job", "script:afterPrintCancelled"})
    comm.done = False
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    temps = controller.get_state()["snapshot"]["tool_temps"]
    assert temps.get("0", temps.get(0)) not in (0, 0.0)
    state, plan = controller.current_pause()
    assert state.tool_temps[0] > 0 and plan.lines


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
    import octoprint_safepause.controller as controller_module

    monkeypatch.setattr(controller_module, "MAX_NOTES", 2)
    controller, comm, port, _ = rig
    comm.stream(200)
    for speed in (10, 20, 30):
        comm.command(f"M106 S{speed}", {"source:api"})
    controller.pause()
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    assert any("commands from outside the file" in w for w in controller.get_state()["warnings"])
