"""Scheduled stops: requests, their layers on every corpus file, and the controller firing them at the
exact line (against the fake comm, whose position counting and tags are OctoPrint's)."""

from __future__ import annotations

import random
import re

import pytest

from octoprint_safepause.core.controller import IDLE, PAUSED, TAG_RESEND, TAG_STOP
from octoprint_safepause.core.gcode import StateTracker, fastscan
from octoprint_safepause.core.schedule import (
    Schedule,
    StopRefused,
    layers_from_index,
    line_end,
    parse,
    resolve,
)

from ..corpus import corpus_files
from . import test_controller
from .fake_printer import FakePort
from .test_controller import FILE, expected_file_lines, file_lines, wait_for, wait_resumed

make = test_controller.make  # the fixture


def layers_of(path, flavour="marlin", tmp=None):
    info = fastscan.build_index(str(path), flavour, str(tmp / (path.name + ".idx")))
    return layers_from_index(fastscan.part_layers(info.layers))  # as the scheduler gets them


def stop(at, action="pause", **more):
    return parse(dict(at=at, action=action, **more), path=None, scope="print")


# ------------------------------------------------------------------ requests


def test_requests_are_checked_with_clear_reasons():
    assert stop({"z": 5}).value == 5.0
    assert stop({"layer": 3}, "filament_change").action == "filament_change"
    assert stop({"next_layer": True}).at == {"next_layer": True}
    assert stop({"every": 2}, "gcode", gcode=["M117 hello", " ", "M300"]).gcode == ("M117 hello", "M300")
    refused = {
        "'at' must be one of": dict(at={"z": 1, "layer": 2}),
        "'at.z' must be a height": dict(at={"z": "5"}),
        "'at.layer' must be a whole number": dict(at={"layer": 2.5}),
        "'at.every' must be a whole number": dict(at={"every": 0}),
        "'action' must be one of": dict(at={"z": 1}, action="explode"),
        "'gcode' goes with the action 'gcode' only": dict(at={"z": 1}, gcode=["M117"]),
        "'gcode' must be a list of 1 to 20 lines": dict(at={"z": 1}, action="gcode", gcode=[]),
        "OctoPrint host commands": dict(at={"z": 1}, action="gcode", gcode=["@pause"]),
        "control character": dict(at={"z": 1}, action="gcode", gcode=["M117 a\nG28"]),
        "'message' is longer than 200": dict(at={"z": 1}, message="x" * 201),
    }
    for reason, data in refused.items():
        with pytest.raises(ValueError, match=reason):
            parse(data, path=None, scope="print")
    with pytest.raises(ValueError, match="running print only"):
        parse({"at": {"next_layer": True}}, path="a.gcode", scope="file")


# ------------------------------------------------------------------ layers, on every corpus file


@pytest.mark.parametrize("path,flavour", corpus_files(), ids=lambda v: getattr(v, "name", v))
def test_each_kind_of_stop_is_the_first_deposit_of_its_layer(path, flavour, tmp_path):
    layers = layers_of(path, flavour, tmp_path)
    assert len(layers) > 3
    middle = layers[len(layers) // 2]
    z_stop = resolve(stop({"z": middle.z}), layers, None, lambda la: line_end(str(path), la))
    assert z_stop.layer == next(la for la in layers if la.z >= middle.z - 0.005)
    assert resolve(stop({"layer": 3}), layers, None, lambda la: line_end(str(path), la)).layer == layers[2]
    assert resolve(stop({"every": 2}), layers, None, lambda la: line_end(str(path), la)).layer == layers[2]
    running = resolve(stop({"next_layer": True}), layers, middle.pos + 1, lambda la: line_end(str(path), la))
    assert running.layer == layers[middle.number]  # the one after the layer being read
    with pytest.raises(StopRefused, match="has started already"):
        resolve(stop({"layer": 2}), layers, middle.pos + 1, lambda la: line_end(str(path), la))
    with pytest.raises(StopRefused, match="no layer at or above"):
        resolve(stop({"z": 10_000}), layers, None, lambda la: line_end(str(path), la))

    # The tracker, fed independently line by line: the target line is the first line that extrudes at
    # the layer's height, and its end is the filepos OctoPrint tags it with.
    tracker = StateTracker(flavour)
    pos = 3 if path.read_bytes()[:3] == b"\xef\xbb\xbf" else 0  # OctoPrint counts a BOM
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for raw in handle:
            start = pos
            pos += len(raw.encode("utf-8"))
            if start < z_stop.layer.pos:
                tracker.feed(raw)
                continue
            assert start == z_stop.layer.pos
            assert pos == z_stop.end
            before = tracker.state
            tracker.feed(raw)
            assert tracker.state.e != before.e or tracker.state.retracted != before.retracted  # extrudes
            break


_SLICER_Z = re.compile(rb"^;Z:([\d.]+)", re.MULTILINE)  # PrusaSlicer: each layer's height
_CURA_LAYER = re.compile(rb"^;LAYER:(\d+)", re.MULTILINE)  # CuraEngine: each layer's number from 0


@pytest.mark.parametrize("path,flavour", corpus_files(), ids=lambda v: getattr(v, "name", v))
def test_layers_are_numbered_as_the_slicer_numbers_them(path, flavour, tmp_path):
    """The slicer's layer comments are not read to find layers (where the file deposits is), but they
    say how the slicer's preview numbers them: layer N here is the slicer's layer N, at its height (an
    intro line at another height before the first layer is no layer). Spiral vase files are the
    exception: a layer here every 0.05 mm of the rising spiral, one per turn for the slicer."""
    data = path.read_bytes()
    heights = [float(z) for z in _SLICER_Z.findall(data)]
    cura = _CURA_LAYER.findall(data)
    if not heights and not cura:
        pytest.skip(f"{path.name} has no slicer layer comments")  # an extra file from another slicer
    layers = layers_of(path, flavour, tmp_path)
    if re.search(rb"^; spiral_vase = 1", data, re.MULTILINE):
        assert len(layers) > len(heights) and layers[0].z == heights[0]
        return
    if heights:
        assert [layer.z for layer in layers] == pytest.approx(heights, abs=0.0015)
    else:
        assert [int(n) for n in cura] == list(range(len(layers)))


# ------------------------------------------------------------------ the controller


def schedule_on(controller, port, tmp_path, *stops):
    path = port.comm.path
    schedule = Schedule("part.gcode", path, layers_of(FILE, "marlin", tmp_path))
    controller.set_schedule(schedule)
    return schedule, [controller.schedule_stop(s) for s in stops]


def deposits_sent(comm):
    """(Z, line) of every file line that reached the printer and deposited (extrudes while it moves)."""
    tracker = StateTracker("marlin")
    out = []
    for line, tags in comm.wire:
        before = tracker.state
        tracker.feed(line)
        after = tracker.state
        extrudes = after.e is not None and before.e is not None and after.e > before.e + 1e-6
        moves = (after.x, after.y) != (before.x, before.y)  # a prime in place (G1 E5) deposits nothing
        if "source:file" in tags and extrudes and moves and after.z is not None:
            out.append((after.z, line))
    return out


def test_a_pause_stop_holds_the_first_deposit_of_its_layer_and_sends_it_once_on_resume(make, tmp_path):
    controller, comm, port, events = make()
    schedule, (scheduled,) = schedule_on(controller, port, tmp_path, stop({"layer": 5}, message="insert magnets"))
    assert controller.get_state()["stops"][0]["layer"] == 5
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["reason"] == "insert magnets" and state["source"] == "schedule"
    assert state["stops"] == []
    target = scheduled.layer
    assert state["saved_line"] == line_end_text(FILE, target.offset)
    # nothing of layer 5 went out, all of layer 4 did
    assert all(z < target.z - 0.04 for z, _ in deposits_sent(comm))
    assert max(z for z, _ in deposits_sent(comm)) == pytest.approx(schedule.layers[3].z, abs=1e-6)
    names = [name for name, _ in events]
    assert names.index("stop_reached") < names.index("paused")
    reached = dict(events)["stop_reached"]
    assert reached["message"] == "insert magnets" and reached["stop"]["layer"] == 5
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    sent = [line for line, _ in file_lines(comm)]
    assert sent == expected_file_lines(port.comm.path)  # every file line once, in order
    resent = [line for line, tags in comm.wire if TAG_RESEND in tags]
    assert resent == [state["saved_line"]]


def line_end_text(path, offset):
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.readline().decode().split(";", 1)[0].strip()


def test_a_gcode_stop_sends_its_lines_before_the_layer_and_the_print_goes_on(make, tmp_path):
    controller, comm, port, events = make()
    _, (scheduled,) = schedule_on(
        controller, port, tmp_path, stop({"layer": 4}, "gcode", gcode=["M117 layer 4", "M104 S213"])
    )
    comm.stream(max_lines=200_000)
    assert wait_resumed(controller, comm)
    comm.stream()
    wire = [line for line, _ in comm.wire]
    at = wire.index("M117 layer 4")
    assert wire[at : at + 3] == ["M117 layer 4", "M104 S213", line_end_text(FILE, scheduled.layer.offset)]
    assert all(TAG_STOP in tags for line, tags in comm.wire[at : at + 2])
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(port.comm.path)
    assert [name for name, _ in events] == ["stop_reached"]
    assert controller.get_state()["error"] is None


def test_a_gcode_stop_that_would_travel_through_the_print_is_not_sent(make, tmp_path):
    controller, comm, port, events = make()
    schedule_on(controller, port, tmp_path, stop({"layer": 6}, "gcode", gcode=["G1 X1 Y1"]))
    comm.stream(max_lines=200_000)
    assert wait_resumed(controller, comm)
    comm.stream()
    assert "G1 X1 Y1" not in [line for line, _ in comm.wire]
    assert "refused by the safety check" in controller.get_state()["error"]
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(port.comm.path)


def test_gcode_must_leave_the_printer_as_it_found_it(make, tmp_path):
    controller, comm, port, _ = make()
    schedule_on(controller, port, tmp_path, stop({"layer": 6}, "gcode", gcode=["G91", "G1 Z5"]))
    comm.stream(max_lines=200_000)
    assert wait_resumed(controller, comm)
    assert "changes the X/Y/Z mode" in controller.get_state()["error"]
    assert "G1 Z5" not in [line for line, _ in comm.wire]


def test_every_n_layers_fires_again_and_again(make, tmp_path):
    controller, comm, port, events = make()
    schedule, (scheduled,) = schedule_on(controller, port, tmp_path, stop({"every": 3}))
    assert scheduled.layer.number == 4  # after 3 layers
    for expected in (4, 7, 10):
        comm.stream()
        assert wait_for(lambda: controller.state == PAUSED)
        assert [p["stop"]["layer"] for n, p in events if n == "stop_reached"][-1] == expected
        controller.resume()
        assert wait_resumed(controller, comm)
        assert controller.get_state()["stops"][0]["layer"] == expected + 3
    assert controller.get_state()["stops"][0]["fired"] == 3


def test_a_stop_already_past_is_refused_and_a_removed_one_does_not_fire(make, tmp_path):
    controller, comm, port, events = make()
    schedule, (kept,) = schedule_on(controller, port, tmp_path, stop({"layer": 30}))
    comm.stream(max_lines=1000)  # into layer 5
    with pytest.raises(StopRefused, match="has started already"):
        controller.schedule_stop(stop({"layer": 1}))
    assert controller.unschedule_stop(kept.id).id == kept.id
    comm.stream()
    assert controller.state == IDLE and not [n for n, _ in events if n == "stop_reached"]
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(port.comm.path)


def test_without_stops_the_hook_looks_at_pause_commands_only(make, tmp_path):
    controller, comm, port, _ = make()
    assert "G1" not in controller._file_watch
    schedule, _ = schedule_on(controller, port, tmp_path, stop({"layer": 8}))
    assert {"G0", "G1"} <= controller._file_watch
    controller.set_schedule(None)
    assert "G1" not in controller._file_watch and controller._stop_tag is None


# ------------------------------------------------------------------ every corpus file, end to end


@pytest.mark.parametrize("path,flavour", corpus_files(), ids=lambda v: getattr(v, "name", v))
def test_on_every_corpus_file_stops_hold_exactly_their_layers_first_line(path, flavour, tmp_path):
    """Three stops at random layers of each real file (vase mode, tool changes, firmware retraction,
    z-hop...): the lines before each pause are exactly the file's lines before that layer's first
    deposit, that line is held and sent once on resume, and the print ends with every line once."""
    from octoprint_safepause.core.controller import PauseController

    from ..corpus import profile_for
    from .fake_printer import FakeComm, FakePort

    layers = layers_of(path, flavour, tmp_path)
    rng = random.Random(path.name)
    picks = sorted(rng.sample(range(2, len(layers) + 1), 3))
    controller = PauseController(port=None, hold_timeout=0.3)
    comm = FakeComm(str(path), controller)
    port = FakePort(comm, profile_for(path) or {"volume": {"width": 500, "depth": 500, "height": 500}})
    events = []
    # the file's own M600 / M601 (the Prusa file) go to the printer here: only the scheduled stops pause
    values = {"filament_change": "firmware", "take_over_pause": False}
    controller.bind(port, emit=lambda n, p: events.append((n, p)), settings=lambda: values, flavour=lambda: flavour)
    controller.start()
    try:
        controller.set_schedule(Schedule("part.gcode", str(path), layers))
        for number in picks:
            controller.schedule_stop(stop({"layer": number}))
        expected = expected_file_lines(path)
        for number in picks:
            comm.stream()
            assert wait_for(lambda: controller.state == PAUSED), (number, controller.get_state()["error"])
            layer = layers[number - 1]
            sent = [int(next(t for t in tags if t.startswith("filepos:"))[8:]) for _, tags in file_lines(comm)]
            assert sent[-1] <= layer.pos  # nothing of the layer went out...
            assert len(sent) == len(expected_lines_before(path, layer.pos))  # ...and all of the file before it
            assert controller.get_state()["saved_line"] == line_end_text(path, layer.offset)
            controller.resume()
            assert wait_resumed(controller, comm)
        comm.stream()
        assert [line for line, _ in file_lines(comm)] == expected
        assert [p["stop"]["layer"] for n, p in events if n == "stop_reached"] == picks
    finally:
        controller.stop()


def expected_lines_before(path, pos):
    """The file lines OctoPrint sends that end at or before `pos`."""
    out = []
    at = 3 if path.read_bytes()[:3] == b"\xef\xbb\xbf" else 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for raw in handle:
            at += len(raw.encode("utf-8"))
            if at > pos:
                break
            if raw.split(";", 1)[0].strip():
                out.append(raw)
    return out


class StreamingPort(FakePort):
    """Releasing the hold lets the print stream on at once, on the releasing thread (as OctoPrint's
    set_job_on_hold(False) may run the next file line's hook on the caller's thread)."""

    def set_hold(self, value):
        super().set_hold(value)
        if not value:
            self.comm.stream()


def test_a_stop_right_after_a_resume_is_taken_while_the_resume_still_finishes(make, tmp_path):
    controller, comm, port, events = make(port_class=StreamingPort)
    schedule_on(controller, port, tmp_path, stop({"every": 1}))
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    controller.resume()  # the next layer's line comes while the resume ends: a pause again, not lost
    assert wait_for(lambda: len([n for n, _ in events if n == "paused"]) == 2)
    assert [p["stop"]["layer"] for n, p in events if n == "stop_reached"] == [2, 3]
    assert controller.get_state()["error"] is None


def test_a_filament_change_stop_parks_at_the_change_position_and_unloads(make, tmp_path):
    controller, comm, port, events = make()
    schedule_on(controller, port, tmp_path, stop({"layer": 5}, "filament_change", message="blue"))
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    state = controller.get_state()
    assert state["change"]["step"] == "unloaded" and state["reason"] == "blue"
    assert "G1 E-15 F3000" in [line for line, _ in comm.wire]
    controller.resume()
    assert wait_resumed(controller, comm)
    comm.stream()
    assert [line for line, _ in file_lines(comm)] == expected_file_lines(port.comm.path)
