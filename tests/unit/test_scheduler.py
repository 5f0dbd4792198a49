"""The scheduler: a file's stops kept in its metadata, the running print's schedule built when a print
starts (at once, or when the index is built), the command table's answers and refusals."""

from __future__ import annotations

from types import SimpleNamespace

from octoprint_safepause.core import commands
from octoprint_safepause.core.controller import IDLE, PAUSED
from octoprint_safepause.core.gcode import fastscan
from octoprint_safepause.core.scheduler import Scheduler

from . import test_controller
from .test_controller import FILE, wait_for, wait_resumed

make = test_controller.make  # the fixture


class Layers:
    """layers_of(disk, done): None until `ready()` (an index being built), then the file's layers."""

    def __init__(self, tmp_path, ready=True):
        self.info = fastscan.build_index(str(FILE), "marlin", str(tmp_path / "part.idx"))
        self.is_ready = ready
        self.waiting = []

    def __call__(self, disk, done):
        if self.is_ready:
            return fastscan.part_layers(self.info.layers)  # as IndexStore.layers answers
        if done is not None:
            self.waiting.append(done)
        return None

    def ready(self):
        self.is_ready = True
        for done in self.waiting:
            done()


def wired(make, tmp_path, ready=True, **options):
    controller, comm, port, events = make()
    port.disk_path = lambda origin, path: comm.path if origin == "local" and path == "part.gcode" else None
    layers = Layers(tmp_path, ready)
    scheduler = Scheduler(port, controller, layers, **options)
    actions = SimpleNamespace(controller=controller, scheduler=scheduler, recovery=None)
    return controller, comm, port, events, scheduler, layers, actions


def run(actions, name, **data):
    return commands.run(actions, name, data, source="user:admin")


def test_a_files_stops_are_kept_with_it_and_fire_when_it_is_printed(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path)
    status, body = run(actions, "schedule", at={"z": 1.0}, message="nuts", path="part.gcode")
    assert status == 200, body
    stop = body["stop"]
    assert stop["scope"] == "file" and stop["z"] >= 1.0 - 0.005 and stop["filepos"] > 0
    assert port.file_stops("part.gcode") == [
        {"id": stop["id"], "at": {"z": 1.0}, "action": "pause", "gcode": [], "message": "nuts"}
    ]
    listed = scheduler.file_schedule("part.gcode")
    assert listed["status"] == "ready" and [s["id"] for s in listed["stops"]] == [stop["id"]]
    assert listed["layers"][0]["layer"] == 1
    # the print starts: the stop applies to it
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    assert [s["id"] for s in controller.get_state()["stops"]] == [stop["id"]]
    comm.stream()
    assert wait_for(lambda: controller.state == PAUSED)
    assert controller.get_state()["reason"] == "nuts"
    controller.resume()
    assert wait_resumed(controller, comm)
    scheduler.on_event("PrintDone", {})
    assert controller.get_state()["stops"] == [] and controller.schedule_path() is None
    assert len(port.file_stops("part.gcode")) == 1  # still the file's, for its next print


def test_the_print_waits_for_its_layers_and_then_gets_its_files_stops(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path, ready=False)
    port.save_file_stops("part.gcode", [{"id": "abc", "at": {"layer": 3}, "action": "pause"}])
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    status, body = run(actions, "schedule", at={"next_layer": True})
    assert status == 409 and body["analysing"] is True, body
    # the file has stops: the print waits for its layers (OctoPrint's job hold), so none is missed
    assert comm.hold == 1 and comm.stream() == 0
    state = controller.get_state()
    assert (state["state"], state["waiting"], state["holding"]) == ("idle", "layers", True)
    layers.ready()
    assert comm.hold == 0
    state = controller.get_state()
    assert (state["waiting"], state["holding"]) == (None, False)
    assert [s["layer"] for s in controller.get_state()["stops"]] == [3]
    status, body = run(actions, "schedule", at={"every": 5})
    assert status == 200 and body["stop"]["layer"] == 6 and body["stop"]["scope"] == "print"


def test_refusals_are_clear_answers(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path)
    port.printer_state = "operational"
    cases = [
        (dict(at={"z": 1}), 409, "nothing is printing"),
        (dict(at={"z": 1}, path="missing.gcode"), 404, "no local file"),
        (dict(at={"layer": 100000}, path="part.gcode"), 400, "the file has"),
        (dict(at={"z": 1}, path=""), 400, "'path' must be"),
        (dict(at={"next_layer": True}, path="part.gcode"), 400, "running print only"),
        (dict(at={"z": 1}, colour="red"), 400, "unknown parameter"),
    ]
    for data, status, words in cases:
        got, body = run(actions, "schedule", **data)
        assert (got, words in body["error"]) == (status, True), (data, got, body)
    assert run(actions, "unschedule", id="nope")[0] == 404
    assert run(actions, "unschedule")[0] == 400
    # G-code of one's own needs OctoPrint's CONTROL, like the terminal
    data = {"at": {"z": 1}, "action": "gcode", "gcode": ["M117 hi"]}
    assert commands.refusal("schedule", data, lambda p: p != "gcode") is not None
    assert commands.refusal("schedule", {"at": {"z": 1}}, lambda p: p != "gcode") is None


def test_removing_a_files_stop_on_the_running_print_removes_it_from_the_file(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path)
    _, body = run(actions, "schedule", at={"layer": 9}, path="part.gcode")
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    assert run(actions, "unschedule", id=body["stop"]["id"])[0] == 200
    assert port.file_stops("part.gcode") == [] and controller.get_state()["stops"] == []
    comm.stream()
    assert controller.state == IDLE and not [n for n, _ in events if n == "stop_reached"]


def test_a_file_stop_set_while_that_file_prints_applies_now_unless_past(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path)
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    comm.stream(max_lines=1000)  # into layer 5
    status, body = run(actions, "schedule", at={"layer": 2}, path="part.gcode")
    assert status == 200 and "not for the print running now" in body["warning"]
    status, body = run(actions, "schedule", at={"layer": 20}, path="part.gcode")
    assert status == 200 and body["warning"] is None
    assert [s["layer"] for s in controller.get_state()["stops"]] == [20]
    assert len(port.file_stops("part.gcode")) == 2


def test_damaged_metadata_never_fails_a_print(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path)
    port.save_file_stops("part.gcode", ["junk", {"id": 5}, {"id": "x", "at": {"z": "high"}}, {"id": "ok", "at": {"layer": 4}}])
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    assert [s["id"] for s in controller.get_state()["stops"]] == ["ok"]


def test_a_stop_the_print_passed_before_its_layers_were_known_is_said(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path, ready=False)
    port.save_file_stops("part.gcode", [{"id": "early", "at": {"layer": 2}, "action": "pause"}])
    port.hold_raises = True  # the print could not be held: it streams on while the index is built
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    comm.stream(max_lines=1000)
    layers.ready()
    error = controller.get_state()["error"]
    assert "pause at layer 2" in error and "has started already" in error, error


def test_a_print_whose_layers_do_not_come_goes_on_after_the_longest_wait(make, tmp_path):
    controller, comm, port, events, scheduler, layers, actions = wired(make, tmp_path, ready=False, layers_wait=0.2)
    port.save_file_stops("part.gcode", [{"id": "early", "at": {"layer": 2}}, {"id": "late", "at": {"layer": 20}}])
    scheduler.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    assert comm.hold == 1 and controller.get_state()["waiting"] == "layers"
    # the reader never answers: the print is not held for ever
    assert wait_for(lambda: comm.hold == 0, timeout=5)
    assert controller.get_state()["waiting"] is None and controller.state == IDLE
    assert comm.stream(max_lines=1000) == 1000
    # the layers come late: the stop it passed meanwhile is said, the one ahead still fires
    layers.ready()
    state = controller.get_state()
    assert "pause at layer 2" in state["error"] and "has started already" in state["error"], state
    assert [s["id"] for s in state["stops"]] == ["late"]


def test_layers_are_numbered_from_the_first_layer_not_an_intro_line_printed_higher(tmp_path):
    from octoprint_safepause.core.schedule import layers_from_index, parse, resolve

    raw = Layers(tmp_path).info.layers
    assert (raw[0][0], raw[1][0]) == (0.28, 0.2)  # where the file deposits: the intro line, the first layer
    layers = layers_from_index(fastscan.part_layers(raw))
    # layer 1 is the first layer (as the slicer's preview counts): the intro line is no layer of the part
    assert (layers[0].number, layers[0].z, layers[0].pos) == (1, 0.2, raw[1][1])
    assert len(layers) == len(raw) - 1
    assert resolve(parse({"at": {"layer": 1}}, path=None, scope="print"), layers, None, lambda la: 0).layer.z == 0.2
    stop = parse({"at": {"z": 0.28}}, path=None, scope="print")
    assert resolve(stop, layers, None, lambda layer: 0).layer.z == 0.36
