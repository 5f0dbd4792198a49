"""Scheduled stops (docs/scheduled-stops.md) end to end: REST against a real `octoprint serve` printing real
slicer files on OctoPrint's virtual printer, judged by what reached the printer (serial.log).

The files are real corpus files cut after their first layers (the real lines, in order, up to the first
deposit of the layer after the last one kept): PrusaSlicer with variable layer heights, z-hop and
relative E (13: 0.2 mm, then steps shrinking to 0.08 mm, then growing; the settings of 02), CuraEngine with
z-hop and absolute E (12), a spiral vase whose layer steps change from 0.2 mm to the vase's 0.05 mm (04).

For every kind of stop (`z`, `layer`, `every` N set on the file before printing; `next_layer` set on the
running print) each pause must land exactly at the layer start: OctoPrint's status says paused by the
schedule at the layer's first deposit line; every deposit (a G0-G3 with X or Y and a positive E step, E
read per the file's own M82/M83) sent before the park is below the layer's Z, the file line before that
first deposit went out and the deposit itself did not; over the whole print every file line reached the
printer exactly once, in order (the held line once, on resume). A G-code stop sends its lines right
before the layer's first deposit without pausing; one the safety check refuses sends nothing. The
refusals (400, 403, 404, 409), the `analysing` answer, unschedule, and the file's stops surviving a
restart of OctoPrint.

The server is this module's own (`server`): the virtual printer's hotend is pinned at 215 °C so that the
files' M109/M190 return at once, it is put in absolute mode before each print (`printer_setup`), and the
printer profile is the one each file was sliced for (scripts/corpus.py). 13 draws an intro line at Z0.28
before its first layer at Z0.2, which is no layer (layer 1 is the first layer, as in the slicer's preview).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sandbox as sandbox_module

from .conftest import REPO, SafePauseServer, wait_for
from .test_rest_api import as_user, ensure_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
ARTIFACTS = REPO / "test-artifacts" / ("e2e-schedule-" + _WORKER if _WORKER else "e2e-schedule")
API = "/api/plugin/safepause"
LAYER_STEP = 0.05  # mm: a deposit this far from the layer's height starts a new layer (the docs' rule)
PRINTING_TIMEOUT = 120.0  # s: the virtual printer at its own pace, on a loaded 2-core machine
# The virtual printer's hotend pinned at 215 °C and its bed starting there: the files' M109/M190 (at most
# 215 °C, S: wait only while colder) return at once instead of heating for seconds per print (02 lets the
# hotend cool to 150 °C before its M109).
CONFIG = {
    "plugins": {
        "virtual_printer": {
            "ambientTemperature": 215.0,
            "pinnedExtruders": {0: 215.0},
            "simulated_errors": [],
        }
    }
}


def printer_setup(speed: int) -> list:
    """Sent between prints (SafePause notes nothing outside a print). The virtual printer starts in
    relative mode (a real Marlin starts absolute, and Cura's file 12 never sends G90), which it uses only to
    simulate how long moves take (a tenth of the real time); M220/M221 scale that. The lines are the same."""
    return ["G90", f"M220 S{speed}", f"M221 S{speed}"]


@dataclass(frozen=True)
class Part:
    """A corpus file's first `layers` layers, uploaded as `name`."""

    name: str
    source: str
    layers: int
    speed: int = 100  # % of the virtual printer's own pace (M220/M221)

    @property
    def profile(self) -> str:
        return sandbox_module.corpus.profile_id_for(self.source)

    @property
    def flavour(self) -> str:
        return sandbox_module.corpus.flavour_for(self.source)


CURA = "12_cura_marlin_absE_zhop_ender3_bunny_0.20mm.gcode"
VASE = "04_reprap_absE_spiral_vase_twist_0.20mm.gcode"
VARIABLE = "13_marlin2_relE_variable_layer_height_ender3_bunny_0.08-0.28mm.gcode"
PARTS = {
    "cura": Part("sched_cura_12.gcode", CURA, 8),
    "vase": Part("sched_vase_04.gcode", VASE, 15),
    "variable": Part("sched_variable_13.gcode", VARIABLE, 14),
    "gcode": Part("sched_gcode_12.gcode", CURA, 5, speed=1000),
    "restart": Part("sched_restart_12.gcode", CURA, 4, speed=1000),
}


# ------------------------------------------------------------------------- what the printer does with E


_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))")


class Toolhead:
    """The logical position and E of a printer following G-code, written for this test from the
    firmwares' documentation: G90/G91, M82/M83 (on Marlin, G90/G91 set E's mode too; on Prusa and
    RepRapFirmware only M82/M83 do), G92, G28. `feed` answers the logical Z of a deposit: a G0-G3 with X
    or Y and a positive E step."""

    def __init__(self, flavour: str = "marlin"):
        self.flavour = flavour
        self.pos = {"X": 0.0, "Y": 0.0, "Z": 0.0}
        self.e = 0.0
        self.relative_xyz = False
        self.relative_e = False

    def feed(self, raw: str) -> float | None:
        code = raw.split(";", 1)[0].strip().upper()
        if not code:
            return None
        head, _, rest = code.partition(" ")
        words = {letter: float(value) for letter, value in _WORD.findall(rest)}
        if head in ("G0", "G1", "G2", "G3"):
            for axis in "XYZ":
                if axis in words:
                    self.pos[axis] = self.pos[axis] + words[axis] if self.relative_xyz else words[axis]
            step = 0.0
            if "E" in words:
                step = words["E"] if self.relative_e else words["E"] - self.e
                self.e += step
            if step > 1e-9 and ("X" in words or "Y" in words):
                return self.pos["Z"]
        elif head in ("G90", "G91"):
            self.relative_xyz = head == "G91"
            if self.flavour == "marlin":
                self.relative_e = self.relative_xyz
        elif head in ("M82", "M83"):
            self.relative_e = head == "M83"
        elif head == "G92":
            for axis in "XYZ":
                if axis in words:
                    self.pos[axis] = words[axis]
            if "E" in words:
                self.e = words["E"]
        elif head == "G28":
            homed = [axis for axis in "XYZ" if axis in rest] or list("XYZ")
            for axis in homed:
                self.pos[axis] = 0.0
        return None

    def deposits(self, lines) -> list:
        """[(index, Z)] of the deposits among `lines`."""
        out = []
        for index, line in enumerate(lines):
            z = self.feed(line)
            if z is not None:
                out.append((index, z))
        return out


def own_layers(lines, flavour: str) -> list:
    """[(Z, index of its first deposit line)]: the docs' layers, found by this test's own Toolhead."""
    head, layers = Toolhead(flavour), []
    for index, line in enumerate(lines):
        z = head.feed(line)
        # "0.05 mm or more" in decimal terms: 0.70 - 0.65 is just under 0.05 in floats
        if z is not None and (not layers or not round(abs(z - layers[-1][0]), 6) < LAYER_STEP):
            layers.append((z, index))
    # numbered from the first layer at the print's lowest height, as the slicer numbers them: an intro
    # line printed higher before it is no layer
    lowest = min((z for z, _ in layers), default=0.0)
    return layers[next((i for i, (z, _) in enumerate(layers) if z <= lowest + 0.005), 0) :]


def cut(part: Part, target: Path) -> Path:
    """The corpus file's real lines up to (not including) the first deposit of layer `part.layers + 1`."""
    source = sandbox_module.corpus.gcode_dir() / part.source
    raw = source.read_bytes().splitlines(keepends=True)
    text = [line.decode(errors="replace") for line in raw]
    layers = own_layers(text, part.flavour)
    assert len(layers) > part.layers, (part, len(layers))
    target.write_bytes(b"".join(raw[: layers[part.layers][1]]))
    return target


# ----------------------------------------------------------------------------------------- the server


class Client(SafePauseServer):
    """SafePauseServer's REST and log helpers, without a file."""

    def __init__(self, sb):
        self.sb = sb


class Server:
    """This module's OctoPrint: the sandbox, its uploaded slices (SafePauseServer each) and REST helpers."""

    def __init__(self, sb, folder: Path):
        self.sb = sb
        self.folder = folder
        self.slices: dict = {}

    def upload(self, part: Part, name: str | None = None) -> SafePauseServer:
        path = cut(part, self.folder / (name or part.name))
        status, body = self.sb.upload(path)
        assert status == 201, (status, body)
        srv = SafePauseServer(self.sb, path)
        srv.part = part
        return srv

    def slice(self, key: str) -> SafePauseServer:
        if key not in self.slices:
            self.slices[key] = self.upload(PARTS[key])
        return self.slices[key]

    def use_profile(self, profile: str, speed: int = 100):
        """Connected, Operational, with this printer profile, SafePause idle, the printer at `speed`."""
        srv = Client(self.sb)
        state = self.sb.state()
        if state.startswith(("Printing", "Paused", "Pausing", "Resuming", "Starting", "Finishing")):
            if srv.sp_state()["state"] in ("pausing", "paused"):
                srv.command("cancel")
            else:
                self.sb.api("POST", "/api/job", {"command": "cancel"})
            self.sb.wait_state("Operational", "Offline", "Closed", "Error", timeout=30)
        status, connection = self.sb.api("GET", "/api/connection")
        current = connection["current"]
        if current["state"].startswith("Operational") and current["printerProfile"] != profile:
            assert self.sb.disconnect()[0] == 204
            self.sb.wait_state("Offline", "Closed", timeout=15)
        if not self.sb.state().startswith("Operational"):
            self.sb.connect(profile=profile)
        status, connection = self.sb.api("GET", "/api/connection")
        assert connection["current"]["printerProfile"] == profile, connection
        srv.wait_sp("idle", timeout=20)
        mark = srv.serial_mark()
        setup = printer_setup(speed)
        assert self.sb.api("POST", "/api/printer/command", {"commands": setup})[0] == 204
        wait_for(lambda: setup[-1] in [cmd for _, cmd in srv.sends(mark, unnumbered=True)], 10,
                 what="the printer set up")  # fmt: skip

    def stop(self):
        self.sb.stop()
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in (self.sb.octoprint_log, self.sb.serial_log, self.sb.stdout_log):
            if log.exists():
                shutil.copyfile(log, ARTIFACTS / log.name)
        self.sb.cleanup()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    octoprint = Path(sys.executable).parent / "octoprint"
    if not octoprint.exists():
        pytest.fail(f"{octoprint} not found: run the e2e tests with the interpreter of OctoPrint's venv")
    helpers = sorted((Path(__file__).parent / "plugins").glob("*.py"))  # the detector records events
    sb = sandbox_module.Sandbox(octoprint=str(octoprint), plugins=helpers, extra_config=CONFIG)
    here = Server(sb, tmp_path_factory.mktemp("schedule"))
    try:
        sb.start()
        sb.connect(profile=PARTS["variable"].profile)
        yield here
    finally:
        here.stop()


# ------------------------------------------------------------------------------------------ REST helpers


def schedule(srv, user="admin", **params):
    return srv.command("schedule", user=user, **params)


def file_schedule(srv, name=None, timeout=30.0) -> dict:
    """GET ?schedule=<file> once its layers are read."""
    name = name or srv.name

    def ready():
        status, body = srv.api("GET", f"{API}?schedule={name}")
        assert status == 200, (status, body)
        return body["schedule"] if body["schedule"]["status"] == "ready" else None

    return wait_for(ready, timeout, what=f"the layers of {name}", interval=0.1)


def events(srv) -> list:
    return srv.detector()["events"]


def line_index(srv, pos: int) -> int:
    """Index in srv.lines (the lines OctoPrint sends: no comments, no blank lines) of the line that starts
    at byte `pos` of the file, checked against the file itself."""
    k = sum(1 for _, end in srv.lines if end <= pos)
    with open(srv.gcode, "rb") as handle:
        handle.seek(pos)
        raw = handle.readline().decode()
    assert k < len(srv.lines) and raw.split(";", 1)[0].strip() == srv.lines[k][0], (
        f"{pos} is not where line {srv.lines[k][0]!r} of {srv.name} starts: {raw!r}"
    )
    return k


def check_answer(stop: dict, layers: list, layer: int, **expected):
    """A stop as REST answers it: at `layer`, with its Z and file position from GET ?schedule's layers."""
    assert stop["layer"] == layer, (stop, layer)
    assert stop["z"] == layers[layer - 1]["z"] and stop["filepos"] == layers[layer - 1]["pos"], (
        stop,
        layers[layer - 1],
    )
    for key, value in expected.items():
        assert stop[key] == value, (key, stop)


def layer_of_pos(layers: list, pos: int) -> int:
    """The layer OctoPrint is reading at file position `pos` (0 before the first deposit)."""
    return sum(1 for layer in layers if layer["pos"] < pos)


# ------------------------------------------------------------------------------- a print and its holds


class Print:
    """One print of a slice: its pauses, checked as they happen, and its serial.log segments."""

    def __init__(self, srv, layers: list):
        self.srv = srv
        self.layers = layers
        self.events_before = len(events(srv))
        self.start = srv.start_print()
        self.resume_marks: list = []
        self.held: list = []  # index in srv.lines of each held line
        self.fired = 0  # stops reached so far

    def wait_pause(self, layer: int, stop_ids, reason: str | None = None) -> dict:
        """The print pauses before `layer` for the stops `stop_ids`, exactly at its start."""
        srv = self.srv

        def paused():
            state = srv.sp_state()
            if state["state"] == "paused":
                return state
            job = srv.job()
            assert job["state"] in ("Printing", "Pausing", "Paused", "Resuming", "Starting"), (
                f"the print ended ({job['state']}) without pausing before layer {layer}; SafePause: {state}"
            )
            return None

        state = wait_for(paused, PRINTING_TIMEOUT, what=f"the pause before layer {layer}", interval=0.05)
        target = self.layers[layer - 1]
        k = line_index(srv, target["pos"])
        assert state["source"] == "schedule" and state["holding"] is True, state
        assert (state["filepos"], state["saved_line"]) == (target["pos"], srv.lines[k][0]), (
            f"held at {state['filepos']} {state['saved_line']!r}, layer {layer} starts at {target['pos']} "
            f"{srv.lines[k][0]!r}"
        )
        if reason is not None:
            assert state["reason"] == reason, state
        assert srv.job()["state"] == "Paused"

        # what reached the printer until now: the file up to the line before the layer's first deposit,
        # then the park; every deposit below the layer
        mark = srv.serial_mark()
        sent = [cmd for _, cmd in srv.sends(self.start, mark, unnumbered=True)]
        deposits = Toolhead("marlin").deposits(sent)  # the virtual printer is a Marlin
        assert deposits, "nothing was printed before the pause"
        over = [(sent[i], z) for i, z in deposits if z >= target["z"] - 1e-6]
        assert not over, f"deposits at or above layer {layer} (Z{target['z']}) before the pause: {over[:5]}"
        below = self.layers[layer - 2]["z"]  # the layer before is complete: its deposits are the last ones
        assert abs(deposits[-1][1] - below) < LAYER_STEP, (sent[deposits[-1][0]], below)
        numbered = [cmd for _, cmd in srv.sends(self.start, mark)]
        last = max(i for i, cmd in enumerate(numbered) if cmd == srv.lines[k - 1][0])
        assert srv.lines[k][0] not in numbered[last:], "the layer's first deposit went out before the pause"

        # the event, before SafePause's `paused`
        seen = events(srv)[self.events_before :]
        names = [name for name, _ in seen]
        reached = [payload for name, payload in seen if name == "plugin_safepause_stop_reached"]
        fired = [payload["stop"]["id"] for payload in reached[-len(stop_ids) :]]
        assert sorted(fired) == sorted(stop_ids), (reached, stop_ids)
        for payload in reached[-len(stop_ids) :]:
            assert payload["stop"]["layer"] == layer and payload["file"] == srv.name, payload
        assert len(reached) == self.fired + len(stop_ids), f"stops fired: {reached}"
        last_reached = len(names) - 1 - names[::-1].index("plugin_safepause_stop_reached")
        assert "plugin_safepause_paused" in names[last_reached:], names
        self.held.append(k)
        self.fired += len(stop_ids)
        return state

    def resume(self):
        """Resume the pause; returns once SafePause is done with it (idle, or already at the next pause)."""
        srv = self.srv
        held = srv.sp_state()["filepos"]
        self.resume_marks.append(srv.serial_mark())
        status, body = srv.command("resume")
        assert status == 202, (status, body)

        def resumed():
            state = srv.sp_state()
            return state["state"] == "idle" or (state["state"] != "resuming" and state["filepos"] != held)

        wait_for(resumed, 30, what="the resume")

    def finish(self, lines_once=True):
        """Waits for the end of the print (no pause on the way); with `lines_once`, checks that every file
        line went out once, in order, around the holds. Returns the stop_reached events' payloads."""
        srv = self.srv

        def done():
            state = srv.sp_state()
            assert state["state"] != "paused", f"an unexpected pause: {state}"
            return srv.job()["state"] == "Operational"

        wait_for(done, PRINTING_TIMEOUT, what="the end of the print", interval=0.1)
        srv.wait_serial_quiet(self.start)
        if lines_once:
            marks = [self.start, *self.resume_marks, None]
            segments = [[cmd for _, cmd in srv.sends(a, b)] for a, b in zip(marks, marks[1:])]
            assert file_lines_problems(srv, segments, self.held) == []
        reached = [p for n, p in events(srv)[self.events_before :] if n == "plugin_safepause_stop_reached"]
        return reached


def file_lines_problems(srv, segments: list, held: list) -> list:
    """What is wrong with the file lines in serial.log for a print held at file lines `held` (indexes in
    srv.lines, in order). `segments`: the commands sent from the print's start to the first resume
    request, from each resume request to the next, and from the last to the end. Each must carry the
    file's lines from the previous held line (included) to the next one (excluded) as one block; before
    it only OctoPrint's M110 (the first segment) or SafePause's return, after it the park or, at the end,
    OctoPrint's own closing lines. The held line goes out once, after the return; no move of the file near
    a hold goes out during it (SafePause's lines may read like file lines, "G90", "M82", "G1 F1334": only
    moves found once in the whole file tell, as in conftest's exactly_once)."""
    expected = [line for line, _ in srv.lines]
    unique = {line for line in expected if expected.count(line) == 1 and re.search(r"^G[0-3] .*[XYZE]", line)}

    def near(k):
        return {line for line in expected[max(0, k - 30) : k + 30] if line in unique}

    bounds = [0, *held, len(expected)]
    problems = []
    for i, sent in enumerate(segments):
        a, b = bounds[i], bounds[i + 1]
        block = expected[a:b]
        at = next((j for j in range(len(sent) - len(block) + 1) if sent[j : j + len(block)] == block), None)
        if at is None:
            missing = next((j for j, line in enumerate(block) if line not in sent), None)
            problems.append(
                f"segment {i}: file lines {a}..{b} not sent as one block (first missing: {missing})"
            )
            continue
        before, after = sent[:at], sent[at + len(block) :]
        if i == 0:
            if [cmd for cmd in before if not cmd.startswith("M110")]:
                problems.append(f"lines before the file: {before}")
        else:
            leaked = [cmd for cmd in before if cmd in near(a)]
            if leaked:
                problems.append(f"segment {i}: file lines in the return before the held line: {leaked}")
            if expected[a] in before:
                problems.append(f"the held line {expected[a]!r} was sent twice")
        if i < len(segments) - 1:
            if not after:
                problems.append(f"segment {i}: no pause lines after file line {b}")
            leaked = [cmd for cmd in after if cmd in near(b) or cmd == expected[b]]
            if leaked:
                problems.append(f"segment {i}: file lines sent during the hold at line {b}: {leaked}")
        elif set(after) & near(len(expected)):
            problems.append(f"file lines sent again after the end of the file: {after}")
    return problems


# ---------------------------------------------------------------------------------------- G-code stops


def head_at(srv, k: int, flavour: str) -> dict:
    """Where the file leaves the head (logical X, Y, Z) after its first k lines."""
    head = Toolhead(flavour)
    for line, _ in srv.lines[:k]:
        head.feed(line)
    return dict(head.pos)


def test_gcode_stops_go_out_at_the_layer_start_and_those_the_safety_check_refuses_do_not(server):
    """A G-code stop sends its lines right before the layer's first deposit and the print goes on (no
    pause); stops whose lines leave the head elsewhere or travel through the print are refused at their
    layer by the safety check, named in the status, and nothing of them is sent."""
    srv = server.slice("gcode")
    server.use_profile(srv.part.profile, srv.part.speed)
    layers = file_schedule(srv)["layers"]
    good = ["M117 SafePause stop", "M106 S128"]
    status, body = schedule(srv, at={"layer": 3}, action="gcode", gcode=good, path=srv.name, message="fan")
    assert status == 200, (status, body)
    check_answer(body["stop"], layers, 3, action="gcode", gcode=good, message="fan", scope="file")
    fan = body["stop"]
    # plain G-code: accepted now, where it goes is checked at the layer, against the printer's state there
    away = ["G1 X0 Y0"]
    status, body = schedule(srv, at={"layer": 4}, action="gcode", gcode=away, path=srv.name)
    assert status == 200, (status, body)
    leaves = body["stop"]
    start = head_at(srv, line_index(srv, layers[4]["pos"]), srv.part.flavour)
    below = round(layers[3]["z"] / 2, 3)  # half the height of the print's top when layer 5 starts
    through = [f"G1 Z{below}", "G1 X0 Y0", f"G1 X{start['X']:g} Y{start['Y']:g}", f"G1 Z{start['Z']:g}"]
    status, body = schedule(srv, at={"layer": 5}, action="gcode", gcode=through, path=srv.name)
    assert status == 200, (status, body)
    travels = body["stop"]
    log_before = len(Client(srv.sb).log_records())

    run = Print(srv, layers)

    def refused():
        state = srv.sp_state()
        assert state["state"] in ("idle", "pausing"), f"a G-code stop paused the print: {state}"
        return state if state["error"] and "below the top of the print" in state["error"] else None

    state = wait_for(refused, PRINTING_TIMEOUT, what="the stop that travels through the print", interval=0.05)
    assert state["error"] == (
        "the scheduled stop's G-code was not sent, refused by the safety check: line 2 'G1 X0 Y0': "
        f"travels in X/Y at Z{below:g}, below the top of the print (Z{layers[3]['z']:g})"
    ), state
    reached = run.finish(lines_once=False)
    assert [(p["stop"]["id"], p["action"], p["stop"]["layer"]) for p in reached] == [
        (fan["id"], "gcode", 3),
        (leaves["id"], "gcode", 4),
        (travels["id"], "gcode", 5),
    ]
    assert reached[0]["message"] == "fan" and reached[0]["file"] == srv.name
    names = [name for name, _ in events(srv)[run.events_before :]]
    assert "plugin_safepause_paused" not in names and "PrintPaused" not in names, names
    logged = [r.split(" - ", 3)[-1] for r in Client(srv.sb).log_records()[log_before:]]
    refusals = list(dict.fromkeys(r for r in logged if "refused by the safety check" in r))  # (logged twice)
    assert len(refusals) == 2 and "leaves the head away from where it was" in refusals[0], refusals
    assert "below the top of the print" in refusals[1], refusals

    # the stop's lines right before the layer's first deposit, which goes out once, after them
    sent = [cmd for _, cmd in srv.sends(run.start)]
    expected = [line for line, _ in srv.lines]
    k = line_index(srv, layers[2]["pos"])
    at = sent.index(good[0])
    assert sent[at - 1 : at + 3] == [expected[k - 1], *good, expected[k]], sent[at - 2 : at + 4]
    assert file_lines_problems(srv, [sent[:at] + sent[at + len(good) :]], []) == []
    # nothing of the refused ones
    everything = [cmd for _, cmd in srv.sends(run.start, unnumbered=True)]
    assert "G1 X0 Y0" not in everything and through[0] not in everything
    assert srv.sp_state()["error"] == state["error"]  # still named once the print is done


# ------------------------------------------------------------------------------------------- refusals


def test_refusals(server):
    """400 bad values, 404 no such file, 409 nothing printing, 404 unknown stops, 403 without the right to
    pause, 403 G-code without OctoPrint's CONTROL; nothing is kept with the file."""
    srv = server.slice("restart")
    server.use_profile(srv.part.profile, srv.part.speed)
    layers = file_schedule(srv)["layers"]
    # bad payloads: 400, nothing kept
    bad = [
        ({"at": {"height": 5}, "path": srv.name}, "'at' must name one of"),
        ({"at": {"z": "5"}, "path": srv.name}, "'at.z' must be a height"),
        ({"at": {"z": 1, "layer": 2}, "path": srv.name}, "'at' must be one of"),
        ({"at": 5, "path": srv.name}, "'at' must be one of"),
        ({"path": srv.name}, "'at' must be one of"),
        ({"at": {"layer": 0}, "path": srv.name}, "'at.layer' must be a whole number"),
        ({"at": {"every": 1.5}, "path": srv.name}, "'at.every' must be a whole number"),
        ({"at": {"next_layer": True}, "path": srv.name}, "'next_layer' applies to the running print only"),
        ({"at": {"layer": 2}, "action": "explode", "path": srv.name}, "'action' must be one of"),
        ({"at": {"layer": 2}, "gcode": ["M117 x"], "path": srv.name}, "'gcode' goes with the action 'gcode'"),
        ({"at": {"layer": 2}, "action": "gcode", "gcode": ["@pause"], "path": srv.name}, "'gcode' refused"),
        ({"at": {"layer": 2}, "path": srv.name, "when": "now"}, "unknown parameter(s): when"),
        ({"at": {"layer": 2}, "path": ""}, "'path' must be the path of a local file"),
    ]
    for params, message in bad:
        status, body = schedule(srv, **params)
        assert status == 400 and message in body["error"], (params, status, body)
    # a layer beyond the file, a height above it
    status, body = schedule(srv, at={"layer": len(layers) + 1}, path=srv.name)
    assert status == 400 and f"the file has {len(layers)} layers" in body["error"], (status, body)
    status, body = schedule(srv, at={"z": 100}, path=srv.name)
    assert status == 400 and "no layer at or above Z100" in body["error"], (status, body)
    # no such file
    status, body = schedule(srv, at={"layer": 2}, path="no_such_file.gcode")
    assert status == 404 and "no local file" in body["error"], (status, body)
    status, body = srv.api("GET", f"{API}?schedule=no_such_file.gcode")
    assert status == 404, (status, body)
    # without a path, nothing is printing
    status, body = schedule(srv, at={"layer": 2})
    assert status == 409 and "nothing is printing" in body["error"], (status, body)
    # unknown stops
    assert srv.command("unschedule", id="12345678")[0] == 404
    status, body = srv.command("unschedule", id="12345678", path=srv.name)
    assert status == 404 and "there is no stop 12345678" in body["error"], (status, body)
    assert srv.command("unschedule", id="")[0] == 400
    assert file_schedule(srv)["stops"] == []

    # permissions: the read-only viewer may neither schedule nor read a file's layers
    status, body = schedule(srv, user="viewer", at={"layer": 2}, path=srv.name)
    assert (status, body) == (403, {"error": "you are not allowed to schedule pauses"})
    assert srv.command("unschedule", user="viewer", id="12345678")[0] == 403
    assert srv.api("GET", f"{API}?schedule={srv.name}", user="viewer")[0] == 403
    # the plugin's own control permission schedules pauses, but not G-code (OctoPrint's CONTROL)
    apikey = ensure_operator(srv)
    gcode = {
        "command": "schedule",
        "at": {"layer": 2},
        "action": "gcode",
        "gcode": ["M117 hi"],
        "path": srv.name,
    }
    status, body = as_user(srv, apikey, "POST", API, gcode)
    assert (status, body) == (403, {"error": "sending your own G-code needs OctoPrint's Control permission"})
    pause = {"command": "schedule", "at": {"layer": 2}, "path": srv.name}
    status, body = as_user(srv, apikey, "POST", API, pause)
    assert status == 200 and body["stop"]["layer"] == 2, (status, body)
    status, body = as_user(
        srv, apikey, "POST", API, {"command": "unschedule", "id": body["stop"]["id"], "path": srv.name}
    )
    assert status == 200, (status, body)
    assert file_schedule(srv)["stops"] == []


def test_a_freshly_uploaded_file_is_analysing_then_ready(server):
    """A file nobody read yet: GET ?schedule says `analysing` (the index is built in a child process), then
    `ready` with its layers; a stop set on such a file is refused with `analysing` until then."""
    server.use_profile(PARTS["restart"].profile)
    first = server.upload(PARTS["restart"], name="sched_fresh_a.gcode")
    status, body = first.api("GET", f"{API}?schedule={first.name}")
    assert status == 200 and body["schedule"]["status"] == "analysing", (status, body)
    assert body["schedule"]["layers"] == [] and body["schedule"]["stops"] == []
    ready = file_schedule(first)
    assert ready["status"] == "ready" and len(ready["layers"]) == PARTS["restart"].layers

    second = server.upload(PARTS["restart"], name="sched_fresh_b.gcode")
    status, body = schedule(second, at={"layer": 2}, path=second.name)
    assert status == 409 and body.get("analysing") is True, (status, body)
    assert "still being read" in body["error"]
    file_schedule(second)
    status, body = schedule(second, at={"layer": 2}, path=second.name)
    assert status == 200 and body["stop"]["layer"] == 2, (status, body)


# --------------------------------------------------------------------------- kept with the file, removed


def test_file_stops_survive_a_restart_and_an_unscheduled_one_does_not_fire(server):
    """Two stops set on a file, one unscheduled: GET lists the other only, also after OctoPrint restarted;
    printing the file pauses at the kept one's layer, exactly at its start, and nowhere else."""
    srv = server.slice("restart")
    server.use_profile(srv.part.profile, srv.part.speed)
    layers = file_schedule(srv)["layers"]
    status, body = schedule(srv, at={"layer": 2}, path=srv.name, message="removed")
    assert status == 200, (status, body)
    removed = body["stop"]
    status, body = schedule(srv, at={"z": layers[2]["z"]}, path=srv.name, message="kept")
    assert status == 200, (status, body)
    kept = body["stop"]
    check_answer(kept, layers, 3)
    status, body = srv.command("unschedule", id=removed["id"], path=srv.name)
    assert (status, body["removed"]) == (200, removed["id"]), (status, body)
    assert [stop["id"] for stop in file_schedule(srv)["stops"]] == [kept["id"]]
    assert srv.command("unschedule", id=removed["id"], path=srv.name)[0] == 404

    srv.sb.restart()
    server.use_profile(srv.part.profile, srv.part.speed)
    after = file_schedule(srv)
    assert after["layers"] == layers
    assert [(s["id"], s["layer"], s["z"], s["filepos"], s["message"]) for s in after["stops"]] == [
        (kept["id"], 3, layers[2]["z"], layers[2]["pos"], "kept")
    ]

    run = Print(srv, layers)
    run.wait_pause(3, [kept["id"]], reason="kept")
    run.resume()
    reached = run.finish()
    assert [payload["stop"]["id"] for payload in reached] == [kept["id"]]
    k = line_index(srv, layers[2]["pos"])
    assert run.held == [k]
    # one hold: conftest's own check agrees
    (resume_mark,) = run.resume_marks
    held = [cmd for _, cmd in srv.sends(run.start, resume_mark)]
    resumed = [cmd for _, cmd in srv.sends(resume_mark)]
    assert srv.exactly_once(held, resumed, k) == []


# --------------------------------------------------------------------------- every kind, three files


# Where each kind of stop goes: z (a height between all printed before the layer and the layer), layer,
# every N, and the pause after which next_layer is set while the print runs on (it lands on the layer after
# the one being read when the request arrives: normally the next one; stops at one layer make one pause).
# The printer runs at its own pace here (a layer of 02 or 12 takes seconds, one of the vase half a second).
# A stop whose layer starts the moment a resume ends is taken too (the resume is over before its hold is
# released: tests/unit/test_scheduled_stops.py); the stops here are spread out to see each pause apart.
PLANS = {
    # 12: 0.3 mm first layer, then 0.2 mm
    "cura": {"z": 3, "layer": 5, "every": 3, "next_after": 5},
    # 04: three solid layers 0.2 mm apart, then the spiral: a layer every 0.05 mm; the height stop is the
    # first vase layer, where the step changes
    "vase": {"z": 4, "layer": 8, "every": 5, "next_after": 11},  # pauses before 4, 6, 8, 11, 12 or so
    # 13: the intro line of 02 (no layer), then Z0.2, 0.4, and steps shrinking 0.195, 0.165 ... to 0.08 mm
    # from layer 9 (Z1.29): the height stop where the steps shrink, the layer stop where they are 0.08 mm,
    # every 4 across both
    "variable": {"z": 6, "layer": 10, "every": 4, "next_after": 10},  # pauses before 5, 6, 9, 10, 11, 13
}


@pytest.mark.parametrize("key", list(PLANS))
def test_each_kind_of_stop_pauses_exactly_at_the_layer_start(server, key):
    """z, layer and every N set on the file before printing, next_layer on the running print: each pause
    lands before its layer's first deposit, nothing of that layer printed, all of the layer below; the
    status lists the stops ahead; a layer already started is refused (409); every file line goes out once."""
    srv = server.slice(key)
    server.use_profile(srv.part.profile, srv.part.speed)
    plan = PLANS[key]
    sched = file_schedule(srv)
    layers = sched["layers"]
    assert sched["path"] == srv.name and sched["stops"] == []
    assert [layer["layer"] for layer in layers] == list(range(1, srv.part.layers + 1))
    # GET's layers are where this test's own reading of the file finds them
    mine = own_layers([line for line, _ in srv.lines], srv.part.flavour)
    assert [line_index(srv, layer["pos"]) for layer in layers] == [index for _, index in mine]
    assert [layer["z"] for layer in layers] == pytest.approx([z for z, _ in mine], abs=0.0015)
    steps = {round(b["z"] - a["z"], 2) for a, b in zip(layers, layers[1:])}
    if key == "vase":
        assert steps == {0.2, 0.05}, steps  # the layer height changes
    elif key == "variable":
        steps = [round(b["z"] - a["z"], 3) for a, b in zip(layers, layers[1:])]
        # the G-code's Z: 0.2, 0.4, 0.595, 0.76, 0.901 ... 1.209, 1.289 (3 decimals)
        assert steps[:4] == pytest.approx([0.2, 0.195, 0.165, 0.141], abs=0.0011), steps
        assert steps[-4:] == pytest.approx([0.08] * 4, abs=0.0011), steps
    if key == "variable":
        # the intro line at Z0.28 before the first layer is no layer: layer 1 is the first layer at Z0.2
        head = Toolhead(srv.part.flavour)
        intro = {head.feed(line) for line, _ in srv.lines[: line_index(srv, layers[0]["pos"])]} - {None}
        assert layers[0]["z"] == 0.2 and intro == {0.28}, (layers[0], intro)

    # the file's stops, set before printing: each answered with its layer, Z and file position
    z_layer, layer_layer, every = plan["z"], plan["layer"], plan["every"]
    # a height between all that is printed before the layer and the layer: the first layer at or above it
    below = max(layer["z"] for layer in layers[: z_layer - 1])
    height = round((below + layers[z_layer - 1]["z"]) / 2, 3)
    status, body = schedule(srv, at={"z": height}, path=srv.name, message="at a height")
    assert status == 200, (status, body)
    z_stop = body["stop"]
    check_answer(
        z_stop, layers, z_layer, scope="file", path=srv.name, action="pause", fired=0, at={"z": height}
    )
    assert body["warning"] is None and body["state"]["stops"] == []  # nothing is printing
    status, body = schedule(srv, at={"layer": layer_layer}, path=srv.name)
    assert status == 200, (status, body)
    layer_stop = body["stop"]
    check_answer(layer_stop, layers, layer_layer, scope="file", at={"layer": layer_layer})
    status, body = schedule(srv, at={"every": every}, path=srv.name)
    assert status == 200, (status, body)
    every_stop = body["stop"]
    check_answer(every_stop, layers, every + 1, at={"every": every})
    listed = file_schedule(srv)["stops"]
    assert [stop["id"] for stop in listed] == [z_stop["id"], layer_stop["id"], every_stop["id"]]
    assert [stop["layer"] for stop in listed] == [z_layer, layer_layer, every + 1]

    expected = {}  # layer -> ids of the stops that fire there
    for stop, at in ((z_stop, [z_layer]), (layer_stop, [layer_layer])):
        for layer in at:
            expected.setdefault(layer, []).append(stop["id"])
    for layer in range(every + 1, len(layers) + 1, every):
        expected.setdefault(layer, []).append(every_stop["id"])

    def ahead(after: int) -> list:
        """(layer, id) of the stops still to come after `after`: each stop's next occurrence."""
        out = {}
        for layer in sorted(expected):
            for stop_id in expected[layer]:
                if layer > after:
                    out.setdefault(stop_id, layer)
        return sorted((layer, stop_id) for stop_id, layer in out.items())

    run = Print(srv, layers)
    # the running print's stops as the status shows them: the file's, in file order
    shown = wait_for(lambda: srv.sp_state()["stops"], 30, what="the print's stops in the status")
    assert [(stop["layer"], stop["id"]) for stop in shown] == ahead(0)[-len(shown) :], shown
    assert all(stop["scope"] == "file" and stop["layers_away"] >= 0 for stop in shown), shown
    reasons = {z_stop["id"]: "at a height"}
    next_stop = None
    while expected:
        layer = min(expected)
        ids = expected.pop(layer)
        reason = reasons.get(ids[0]) if len(ids) == 1 else None
        if reason is None and len(ids) == 1:
            reason = f"scheduled pause at layer {layer} (Z{layers[layer - 1]['z']:g})"
        state = run.wait_pause(layer, ids, reason)
        # while paused: the stops still ahead, an `every` at its next occurrence, fired once more
        assert sorted((stop["layer"], stop["id"]) for stop in state["stops"]) == ahead(layer), state["stops"]
        assert [stop["layer"] for stop in state["stops"]] == sorted(stop["layer"] for stop in state["stops"])
        if every_stop["id"] in ids and layer + every <= len(layers):
            again = next(stop for stop in state["stops"] if stop["id"] == every_stop["id"])
            assert (again["layer"], again["fired"]) == (layer + every, (layer - 1) // every), again
        # a layer the print has passed: refused on the running print, kept only with the file
        status, body = schedule(srv, at={"layer": layer - 1})
        assert status == 409 and "has started already" in body["error"], (status, body)
        if layer == z_layer:
            status, body = schedule(srv, at={"layer": layer - 1}, path=srv.name)
            assert status == 200 and body["warning"].startswith(
                "kept with the file, but not for the print running now: layer"
            ), (status, body)
            assert body["stop"]["id"] not in [stop["id"] for stop in body["state"]["stops"]]
            assert srv.command("unschedule", id=body["stop"]["id"], path=srv.name)[0] == 200
        run.resume()
        if layer == plan["next_after"]:
            # set on the running print, while it prints: the layer after the one being printed (the
            # print cannot pass the next pause's layer meanwhile)
            job = srv.job()  # OctoPrint may still say Resuming a moment after the file streams on
            streaming = job["state"] in ("Printing", "Resuming")
            assert streaming and job["progress"]["filepos"] > layers[layer - 1]["pos"], job
            before = layer_of_pos(layers, job["progress"]["filepos"])
            status, body = schedule(srv, at={"next_layer": True}, message="next layer")
            assert status == 200, (status, body)
            next_stop = body["stop"]
            barrier = min(expected, default=len(layers) - 1)
            assert before + 1 <= next_stop["layer"] <= barrier + 1, (before, barrier, next_stop)
            check_answer(next_stop, layers, next_stop["layer"], scope="print", path=srv.name)
            shown = next(stop for stop in body["state"]["stops"] if stop["id"] == next_stop["id"])
            assert shown["layer"] == next_stop["layer"] and shown["layers_away"] >= 1, shown
            expected.setdefault(next_stop["layer"], []).append(next_stop["id"])
            reasons[next_stop["id"]] = "next layer"
    reached = run.finish()
    assert next_stop is not None
    fired = [payload["stop"]["layer"] for payload in reached]
    assert fired == sorted(fired) and len(fired) == run.fired
    assert fired.count(next_stop["layer"]) >= 1 and next_stop["id"] in [p["stop"]["id"] for p in reached]
    # the file keeps its own stops for the next print, not the print's
    kept = file_schedule(srv)["stops"]
    assert [stop["id"] for stop in kept] == [z_stop["id"], layer_stop["id"], every_stop["id"]]
    assert srv.sp_state()["stops"] == []


def test_octoprint_log_has_no_safepause_errors(server):
    problems = Client(server.sb).plugin_log_problems()
    assert problems == [], "\n".join(problems)
