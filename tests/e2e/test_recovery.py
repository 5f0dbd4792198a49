"""Recovering a print that died, end to end: a real `octoprint serve`, the virtual printer, a real slice.

The failure is real: the virtual printer drops the serial connection mid-print (`!!DEBUG:drop_connection`,
notes §6), OctoPrint records its reader's position (print_recovery_data.yaml) and the plugin offers the
print from GET /api/plugin/safepause (`recovery`). Recovering it (POST recover) must send the prelude
(docs/recovery.md: declare Z, a relative lift first, never `G28 Z`, heaters waited for before anything
extrudes) and then the file's own lines from the recovery start offset on, exactly once and in order;
what went out is read back from serial.log and run through the independent firmware model
(tests/unit/firmware_model.py): the toolpath after the prelude must be the file's own from that point,
shifted in Z by at most the documented uncertainty (the Z window) when the position was lost, with the
file's temperatures, modes, feed rate and E.

Also: the recovery survives a restart of OctoPrint itself; a SafePause hold ended by a disconnect points
the recovery at the held (saved) line and recovering sends that line; the refusals (409) and bad
requests (400); discard; a later print that ends normally clears the recovery.

Uses `sp_server` (conftest.py): pinned temperatures, no simulated errors, the slice of a corpus file.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.unit.firmware_model import Firmware

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DROP_AT = 0.4  # of the slice's bytes: past the start G-code and the intro line, inside the first layers
PAUSE_AT = 0.35
TOL = 1e-6
RECOVERY_FIELDS = {
    "origin",
    "path",
    "pos",
    "progress",
    "date",
    "layer_z",
    "state",
    "prelude",
    "warnings",
    "unloaded",
    "status",
}
_WORDS = re.compile(r"([A-Z])([-+]?[\d.]+)")


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def ready(sp_server):
    sp_server.ensure_ready()
    forget(sp_server)
    yield sp_server
    sp_server.ensure_ready()
    forget(sp_server)


def forget(server):
    """No recovery left over from an earlier test (or another module)."""
    if server.sp_state().get("recovery") is not None:
        status, body = server.command("discard")
        assert status == 200, (status, body)
    assert server.sp_state()["recovery"] is None


def get_recovery(server, timeout=30.0, **query):
    """GET's `recovery` for the given choices, once it is no longer "analysing"."""
    path = "/api/plugin/safepause"
    if query:
        path += "?" + "&".join(
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in query.items()
        )

    def answer():
        status, body = server.api("GET", path)
        assert status == 200, (status, body)
        rec = body["recovery"]
        return ("done", rec) if rec is None or rec["status"] != "analysing" else None

    return server.wait_for(answer, timeout, interval=0.1, what="the recovery analysis")[1]


def offline(server, timeout=20.0):
    return server.sb.wait_state("Offline", "Error", "Closed", timeout=timeout)


DROP = "!!DEBUG:drop_connection"


def drop_connection(server):
    """The virtual printer drops the serial line; returns the serial.log offset from before the drop."""
    mark = server.serial_mark()
    status, body = server.api("POST", "/api/printer/command", {"commands": [DROP]})
    assert status == 204, (status, body)
    offline(server)
    return mark


def fail_mid_print(server, at=DROP_AT, restart=False):
    """Start the slice, drop the connection once `at` of it was read, (restart OctoPrint,) reconnect.
    Returns (the file lines sent before the drop, the time of the drop)."""
    start = server.start_print(at)
    dropped_at = time.time()
    drop_connection(server)
    sent = file_lines_sent(server, start)
    if restart:
        server.sb.restart()
    server.sb.connect(profile="corpus_210x210x205")
    server.wait_sp("idle")
    return sent, dropped_at


def file_lines_sent(server, start) -> list:
    """The print's lines written to the printer after a serial.log offset (serial.log logs each before
    writing it: a line whose write failed when the connection dropped did not go out), without
    OctoPrint's M110 line number reset; they must be the file's first lines, in order."""
    expected = [line for line, _ in server.lines]
    # OctoPrint's own line number reset and temperature polls (M105) interleave with the file's lines
    polls = {"M105"} - set(expected)
    sends = [cmd for _, cmd in server.sends(start)]
    with open(server.sb.serial_log, "rb") as log:
        log.seek(start)
        tail = log.read().decode(errors="replace")
    # Once the virtual printer dropped the line every write raises, so a write that timed out was not
    # retried successfully (OctoPrint logs the final error only when it is not already closing).
    last_send = tail.rfind(" - Send: ")
    after = tail[last_send:]
    if "while writing to serial port" in after and "Recv:" not in after:
        sends.pop()  # the last one logged is the one whose write failed
    sent = [cmd for cmd in sends if not cmd.startswith("M110") and cmd not in polls]
    assert sent == expected[: len(sent)], "the first print did not send the file's lines in order"
    return sent


def words(line: str) -> dict:
    head, _, rest = line.partition(" ")
    return {"cmd": head, **{k: float(v) for k, v in _WORDS.findall(rest)}}


def line_index(server, pos: int) -> int:
    """Index in server.lines of the line that starts at byte `pos` (a line boundary)."""
    if pos == 0:
        return 0
    ends = [end for _, end in server.lines]
    assert pos in ends, f"{pos} is not a line boundary of the file"
    return ends.index(pos) + 1


def recover(server, **params) -> tuple:
    """POST recover (202); waits for the recovered print to finish. (reply, serial.log sends)."""
    mark = server.serial_mark()
    status, body = server.command("recover", **params)
    assert status == 202, (status, body)
    server.sb.wait_state("Printing", "Finishing", "Operational", timeout=20)
    server.wait_for(lambda: server.job()["state"] == "Operational", 60, interval=0.1, what="the recovered print to finish")
    job = server.job()
    assert job["progress"]["completion"] == pytest.approx(100.0), job
    sends = [cmd for _, cmd in server.sends(mark)]
    return body["recovery"], sends


def split_at_reset(sends: list) -> tuple:
    """(prelude as sent, the job's lines): the job starts with OctoPrint's M110 line number reset."""
    reset = next(i for i, cmd in enumerate(sends) if cmd.startswith("M110"))
    return sends[:reset], [cmd for cmd in sends[reset + 1 :] if not cmd.startswith("M110")]


def check_rest_exactly_once(server, rest: list, first: int):
    """The job sent the file's lines from index `first` on, all of them, once, in order, nothing after."""
    expected = [line for line, _ in server.lines[first:]]
    assert rest[: len(expected)] == expected, "the file's lines after the recovery start are not sent as-is"
    tail = rest[len(expected) :]
    assert not set(tail) & set(expected[-30:]), f"file lines sent again after the end: {tail}"


def check_prelude_is_safe(prelude: list, rec: dict, kept: bool = False):
    """docs/recovery.md. Position lost: declare Z, relative lift first, G28 never with Z. Position kept:
    no homing at all, a lift first. Both: heaters waited for before the first extrusion, at the file's
    temperatures. Returns the declared Z (None when kept)."""
    parsed = [words(line) for line in prelude]
    moves = [i for i, w in enumerate(parsed) if w["cmd"] in ("G0", "G1") and set(w) - {"cmd", "F"}]
    first = moves[0]
    assert set(parsed[first]) - {"cmd", "F"} == {"Z"}, f"the first move is not a lift: {prelude}"
    declared = None
    if kept:
        assert not any(w["cmd"] == "G28" for w in parsed), f"homing with the position kept: {prelude}"
    else:
        assert parsed[0]["cmd"] == "G92" and set(parsed[0]) == {"cmd", "Z"}, prelude
        declared = parsed[0]["Z"]
        assert parsed[first]["Z"] > 0
        modes = [w["cmd"] for w in parsed[:first] if w["cmd"] in ("G90", "G91")]
        assert modes and modes[-1] == "G91", f"the first move is not a relative lift: {prelude}"
        for line in prelude:
            if line.startswith("G28"):
                axes = line.split()[1:]
                assert axes and "Z" not in axes, f"homing Z onto the part: {line}"
    extrusions = [i for i, w in enumerate(parsed) if w["cmd"] in ("G0", "G1") and w.get("E", 0) > 0]
    waits = {w["cmd"]: (i, w.get("S")) for i, w in enumerate(parsed) if w["cmd"] in ("M109", "M190")}
    state = rec["state"]
    assert set(waits) == {"M109", "M190"}, prelude
    if extrusions:
        assert waits["M190"][0] < extrusions[0] and waits["M109"][0] < extrusions[0], prelude
    assert waits["M190"][1] == pytest.approx(state["bed_temp"])
    assert waits["M109"][1] == pytest.approx(state["tool_temps"]["0"])
    return declared


def check_toolpath(server, before: list, prelude: list, rest: list, first: int, declared, max_shift: float):
    """The firmware model. `before`: every command the printer got before the failure (file lines, pause
    lines): where the head physically is. Position lost (`declared` a Z): a reset firmware with the head
    there; kept (`declared` None): the same firmware, its heaters gone cold. Then the prelude and the rest
    as sent. Its toolpath must be the file's own from line `first` on, shifted in Z by 0 to `max_shift`
    (the documented Z uncertainty) when the position was lost, with the file's E, F and temperatures."""
    lines = [line for line, _ in server.lines]
    reference = Firmware("marlin")
    at_start = None
    for k, line in enumerate(lines, 1):
        reference.feed(line)
        if k == first:
            at_start = reference.clone()
    assert at_start is not None
    physical = Firmware("marlin").run(before)

    if declared is None:
        fw = physical.clone()
        fw.targets = {t: 0.0 for t in fw.targets}
        fw.actual = {t: 20.0 for t in fw.actual}
        fw.bed_target, fw.bed_actual = 0.0, 20.0
        shift = 0.0
    else:
        fw = Firmware("marlin")
        fw.pos = list(physical.pos)  # the head stays where the print stopped; the firmware was reset
        shift = physical.pos[2] - declared  # declared at the low end of the window: never below the nozzle
        assert -TOL <= shift <= max_shift + TOL, (shift, max_shift)
    fw.run(prelude)
    assert not fw.errors, fw.errors
    part = physical.max_deposit_z
    for move in fw.moves:
        if move.e > TOL:
            assert move.target > 0 and move.temp >= move.target - TOL, (
                f"cold extrusion in the prelude: {move}"
            )
        if move.travels_xy and part is not None:
            assert min(move.start[2], move.end[2]) > part + TOL, f"XY travel into the part ({part}): {move}"
    # the printer's state after the prelude is the file's at the start point (modes, E, F, heaters, fans)
    mine, theirs = fw.snapshot(), at_start.snapshot()
    for key in ("e", "relative_xyz", "e_flag_relative", "relative_e", "inch", "f", "tool", "targets",
                "bed_target", "fans"):  # fmt: skip
        assert mine[key] == theirs[key], (key, mine[key], theirs[key])
    assert fw.bed_actual >= at_start.bed_target - TOL
    for a, b in zip(fw.logical(), at_start.logical()):
        assert a == pytest.approx(b, abs=TOL), (fw.logical(), at_start.logical())

    fw.moves = []
    fw.lines = first
    fw.run(rest[: len(lines) - first])
    got = [m for m in fw.moves if m.deposits]
    want = [m for m in reference.moves if m.line > first and m.deposits]
    assert got and len(got) == len(want)
    for a, b in zip(got, want):
        assert a.start[:2] == pytest.approx(b.start[:2], abs=TOL), (a, b)
        assert a.end[:2] == pytest.approx(b.end[:2], abs=TOL), (a, b)
        assert a.start[2] == pytest.approx(b.start[2] + shift, abs=TOL), (a, b, shift)
        assert a.end[2] == pytest.approx(b.end[2] + shift, abs=TOL), (a, b, shift)
        assert a.e == pytest.approx(b.e, abs=TOL) and a.f == pytest.approx(b.f, abs=TOL), (a, b)
        assert a.temp >= a.target - TOL and a.target == b.target, (a, b)


def recover_and_check(server, rec: dict, before: list, kept: bool = False, start: str = "position"):
    """Recover with these choices (`rec`: GET's answer for them) and check everything that went out."""
    reply, sends = recover(server, position_kept=kept, start=start, power_lost=rec["choices"]["power_lost"])
    assert reply["path"] == server.name and reply["start"] == rec["start"], (reply, rec["start"])
    assert reply["prelude"] == rec["prelude"]
    prelude, rest = split_at_reset(sends)
    assert prelude == rec["prelude"], "the prelude sent is not the one offered"
    declared = check_prelude_is_safe(prelude, rec, kept=kept)
    first = line_index(server, rec["start"])
    check_rest_exactly_once(server, rest, first)
    exact = rec.get("delivered") and not rec["choices"].get("power_lost")
    check_toolpath(server, before, prelude, rest, first, declared, 0.0 if exact else rec["z_range"][1] - rec["z_range"][0])
    assert get_recovery(server) is None, "the recovered print is still offered"
    return prelude, rest


def check_offered(server, rec: dict, sent_before: list, since: float):
    assert rec is not None, "no recovery offered after the connection dropped"
    assert set(rec) >= RECOVERY_FIELDS, RECOVERY_FIELDS - set(rec)
    assert rec["status"] == "ready" and rec["valid"] is True and rec["error"] is None, rec
    assert rec["origin"] == "local" and rec["path"] == server.name
    sent_end = server.lines[len(sent_before) - 1][1]
    # OctoPrint records what its reader had read; SafePause tells which of those lines were written
    assert sent_end <= rec["read_pos"] < server.size, (sent_end, rec["read_pos"])
    assert rec["delivered"] is True and rec["pos"] == sent_end, (rec["pos"], sent_end, rec["read_pos"])
    assert rec["progress"] == pytest.approx(rec["pos"] / server.size)
    assert since - 5 <= rec["date"] <= time.time() + 1, rec["date"]
    assert rec["layer_z"] and rec["layer_z"] > 0
    assert rec["state"]["bed_temp"] == 60.0 and rec["state"]["tool_temps"]["0"] > 0
    assert rec["choices"] == {"position_kept": False, "start": "position", "power_lost": False}
    assert rec["start"] == rec["pos"] and rec["prelude"] and rec["prelude_error"] is None
    # the virtual printer comes back cold: a bed far below the print's temperature is named
    status, printer = server.api("GET", "/api/printer")
    bed = (printer.get("temperature") or {}).get("bed") or {}
    cooled = bed.get("actual") is not None and bed["actual"] < rec["state"]["bed_temp"] - 15
    assert any("the bed has cooled" in w for w in rec["warnings"]) == cooled, (bed, rec["warnings"])
    # the printer stayed on: no uncertainty; after a power loss it is named whenever there is one
    assert not any("stopped between" in w for w in rec["warnings"]), rec["warnings"]
    lost = get_recovery(server, power_lost=True)
    z_low, z_high = lost["z_range"]
    assert any("stopped between" in w for w in lost["warnings"]) == (z_high - z_low > 1e-6), lost["warnings"]


# -------------------------------------------------------------------------------------------- tests


def test_dropped_connection_is_offered_and_recovers_exactly(sp_server):
    sent_before, since = fail_mid_print(sp_server)
    rec = get_recovery(sp_server)
    check_offered(sp_server, rec, sent_before, since)
    assert rec["source"] == "octoprint"

    # the other choices change the prelude: kept skips homing; layer goes back to the layer's start
    kept = get_recovery(sp_server, position_kept=True)
    assert kept["choices"]["position_kept"] is True and kept["prelude"] != rec["prelude"]
    assert not any(line.startswith("G28") for line in kept["prelude"])
    layer = get_recovery(sp_server, start="layer")
    assert layer["start"] == layer["starts"]["layer"] <= rec["pos"]

    recover_and_check(sp_server, rec, sent_before)


def test_after_a_power_loss_the_lowest_height_of_the_window_is_declared(sp_server):
    """The buffered moves may not have run: Z is declared at the lowest height of the last lines before
    the last one written (a print a little too high, never into the part), and the toolpath continues
    exactly, shifted up by at most the window's height."""
    sent_before, _ = fail_mid_print(sp_server)
    rec = get_recovery(sp_server, power_lost=True)
    assert rec["choices"]["power_lost"] is True and rec["pos"] == sp_server.lines[len(sent_before) - 1][1]
    assert words(rec["prelude"][0])["Z"] == pytest.approx(rec["z_range"][0])
    recover_and_check(sp_server, rec, sent_before)


def test_recovery_survives_a_restart_of_octoprint(sp_server):
    sent_before, since = fail_mid_print(sp_server, restart=True)
    rec = get_recovery(sp_server)
    check_offered(sp_server, rec, sent_before, since)
    recover_and_check(sp_server, rec, sent_before)


def test_hold_ended_by_a_disconnect_recovers_from_the_saved_line(sp_server):
    start = sp_server.start_print(PAUSE_AT)
    status, body = sp_server.command("pause", reason="e2e recovery")
    assert status == 202, (status, body)
    paused = sp_server.wait_sp("paused")
    saved_line, filepos = paused["saved_line"], paused["filepos"]
    assert saved_line and filepos
    sp_server.wait_serial_quiet(start)
    drop_mark = drop_connection(sp_server)
    # what the printer got: the file up to the held line, then SafePause's pause lines (lift, park)
    before = [cmd for _, cmd in sp_server.sends(start, drop_mark) if not cmd.startswith("M110")]
    k = sp_server.held_line_index(filepos)
    assert before[:k] == [line for line, _ in sp_server.lines[:k]] and len(before) > k
    sp_server.wait_sp("idle")
    sp_server.sb.connect(profile="corpus_210x210x205")

    rec = get_recovery(sp_server)
    assert rec is not None and rec["valid"] and rec["source"] == "hold", rec
    assert rec["pos"] == filepos, "the recovery does not point at the held line"
    index = line_index(sp_server, rec["pos"])
    assert index == k
    assert sp_server.lines[index][0] == saved_line, "the line at the recovery position is not the saved one"
    # the head was parked at the pause's height: that, not the file's Z window, is what is declared
    parked = Firmware("marlin").run(before)
    assert rec["prelude"][0] == f"G92 Z{words(rec['prelude'][0])['Z']}"
    assert words(rec["prelude"][0])["Z"] == pytest.approx(parked.logical()[2], abs=TOL), (
        rec["prelude"][0],
        parked.logical(),
    )

    prelude, rest = recover_and_check(sp_server, dict(rec, z_range=[0.0, 0.0]), before)
    assert rest[0] == saved_line, f"the saved line {saved_line!r} was not the first one sent, got {rest[:3]}"


@pytest.mark.parametrize("how", ("stopped", "killed"))
def test_octoprint_ending_during_a_hold_recovers_from_the_held_line_at_the_lifted_height(sp_server, how):
    """Held, lifted and parked; then OctoPrint stops (SIGTERM) or is killed (SIGKILL: nothing of the
    plugin runs) and starts again. The recovery offered is the held line with the nozzle where the pause
    lifted it, whatever OctoPrint's own data says, and it continues with the held line exactly once."""
    start = sp_server.start_print(PAUSE_AT)
    status, body = sp_server.command("pause", reason="e2e restart during a hold")
    assert status == 202, (status, body)
    paused = sp_server.wait_sp("paused")
    saved_line, filepos = paused["saved_line"], paused["filepos"]
    sp_server.wait_serial_quiet(start)
    mark = sp_server.serial_mark()
    before = [cmd for _, cmd in sp_server.sends(start, mark) if not cmd.startswith("M110")]
    k = sp_server.held_line_index(filepos)
    assert before[:k] == [line for line, _ in sp_server.lines[:k]] and len(before) > k
    sp_server.sb.restart(kill=how == "killed")
    sp_server.sb.connect(profile="corpus_210x210x205")
    sp_server.wait_sp("idle")

    rec = get_recovery(sp_server)
    assert rec is not None and rec["valid"] and rec["source"] == "hold", rec
    assert rec["pos"] == filepos and sp_server.lines[line_index(sp_server, rec["pos"])][0] == saved_line
    parked = Firmware("marlin").run(before)
    assert words(rec["prelude"][0])["Z"] == pytest.approx(parked.logical()[2], abs=TOL), rec["prelude"][0]
    kept = get_recovery(sp_server, position_kept=True)
    travel = next(words(line)["Z"] for line in kept["prelude"] if line.startswith("G1 Z"))
    assert travel >= parked.logical()[2] - TOL, "the position-kept prelude travels below the lifted nozzle"
    _, rest = recover_and_check(sp_server, dict(rec, z_range=[0.0, 0.0]), before)
    assert rest[0] == saved_line, f"the saved line {saved_line!r} was not the first one sent, got {rest[:3]}"


def test_octoprint_killed_during_a_filament_change_loads_the_filament_before_it_recovers(sp_server):
    """The filament was pulled out for a change when OctoPrint was killed: the recovery says to put the
    new filament in, and its prelude loads and purges it at the park once hot, before the prime and before
    anything of the part is printed; then the held line, once."""
    start = sp_server.start_print(PAUSE_AT)
    status, body = sp_server.command("change_filament", reason="e2e change, then killed")
    assert status == 202, (status, body)
    paused = sp_server.wait_sp("paused")
    assert paused["change"]["step"] == "unloaded", paused["change"]
    saved_line, filepos = paused["saved_line"], paused["filepos"]
    sp_server.wait_serial_quiet(start)
    before = [cmd for _, cmd in sp_server.sends(start, sp_server.serial_mark()) if not cmd.startswith("M110")]
    k = sp_server.held_line_index(filepos)
    assert "G1 E-15 F3000" in before[k:], before[k:]  # the unload's quick pull reached the printer
    sp_server.sb.restart(kill=True)
    sp_server.sb.connect(profile="corpus_210x210x205")
    sp_server.wait_sp("idle")

    rec = get_recovery(sp_server)
    assert rec is not None and rec["valid"] and rec["source"] == "hold" and rec["unloaded"] is True, rec
    assert rec["pos"] == filepos
    assert any("put the new filament in" in w for w in rec["warnings"]), rec["warnings"]
    prelude = rec["prelude"]
    heated = max(i for i, line in enumerate(prelude) if line.startswith(("M109", "M190")))
    load, purge = prelude.index("G1 E90 F360"), prelude.index("G1 E30 F180")  # the change's defaults
    back = next(i for i in range(purge, len(prelude)) if prelude[i].startswith("G1 X"))
    assert heated < load < purge < back, prelude
    _, rest = recover_and_check(sp_server, dict(rec, z_range=[0.0, 0.0]), before)
    assert rest[0] == saved_line, f"the saved line {saved_line!r} was not the first one sent, got {rest[:3]}"


def test_position_kept_from_the_layer_start(sp_server):
    before, _ = fail_mid_print(sp_server)
    rec = get_recovery(sp_server, position_kept=True, start="layer")
    assert rec["choices"] == {"position_kept": True, "start": "layer", "power_lost": False}
    assert rec["start"] == rec["layer_pos"] == rec["starts"]["layer"] <= rec["pos"]
    recover_and_check(sp_server, rec, before, kept=True, start="layer")


def test_refusals_and_bad_requests(sp_server):
    # nothing to recover or discard
    status, body = sp_server.command("recover")
    assert status == 409 and "no print to recover" in body["error"], (status, body)
    status, body = sp_server.command("discard")
    assert status == 409, (status, body)

    # malformed parameters: 400, whatever the state
    for params in (
        {"start": "middle"},
        {"position_kept": "yes"},
        {"position_kept": 1},
        {"prelude": "G28"},
        {"prelude": [1, 2]},
        {"prelude": ["G1 X1\nG28"]},
        {"frobnicate": True},
    ):
        status, body = sp_server.command("recover", **params)
        assert status == 400 and body["error"], (params, status, body)
    for query in ("start=middle", "position_kept=maybe"):
        status, body = sp_server.api("GET", f"/api/plugin/safepause?{query}")
        assert status == 400 and body["error"], (query, status, body)

    fail_mid_print(sp_server)
    rec = get_recovery(sp_server)
    assert rec is not None

    # no permission
    status, body = sp_server.command("recover", user="viewer")
    assert status == 403, (status, body)
    # not connected
    assert sp_server.sb.disconnect()[0] == 204
    offline(sp_server, timeout=10)
    status, body = sp_server.command("recover")
    assert status == 409 and "not connected" in body["error"], (status, body)
    sp_server.sb.connect(profile="corpus_210x210x205")
    # still malformed while there is something to recover
    status, body = sp_server.command("recover", start="middle")
    assert status == 400, (status, body)

    # while printing: refused, and a new print that ends normally clears the recovery
    sp_server.start_print()
    status, body = sp_server.command("recover")
    assert status == 409 and "running" in body["error"], (status, body)
    assert get_recovery(sp_server) is not None, "the recovery vanished when another print started"
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 60, interval=0.1, what="the print to finish")
    assert get_recovery(sp_server) is None, "a print that ended normally left the old recovery"


def test_discard(sp_server):
    fail_mid_print(sp_server)
    assert get_recovery(sp_server) is not None
    status, body = sp_server.command("discard")
    assert (status, body) == (200, {"discarded": True})
    assert get_recovery(sp_server) is None
    status, body = sp_server.command("discard")
    assert status == 409, (status, body)
    status, body = sp_server.command("recover")
    assert status == 409, (status, body)
    # discarded for good: not offered again after a restart of OctoPrint
    sp_server.sb.restart()
    sp_server.sb.connect(profile="corpus_210x210x205")
    assert get_recovery(sp_server) is None


def test_any_file_resumes_from_a_height_over_rest(sp_server):
    """No record needed: GET lists the file's layers (where it extrudes), POST recover with path and z
    prints every deposit from the first layer at that height on, once, in file order, none below it,
    after a prelude that heats before extruding and travels only above the part."""
    sp_server.sb.connect(profile="corpus_210x210x205")
    sp_server.wait_sp("idle")

    def layers():
        status, body = sp_server.api("GET", f"/api/plugin/safepause?path={sp_server.name}")
        assert status == 200, (status, body)
        answer = body["from_height"]
        return ("done", answer) if answer["status"] == "ready" else None

    answer = sp_server.wait_for(layers, 30, interval=0.2, what="the file's layers")[1]
    zs = [layer["z"] for layer in answer["layers"]]
    assert len(zs) >= 3 and zs == sorted(zs), zs
    layer = answer["layers"][len(zs) // 2]
    status, body = sp_server.api("GET", f"/api/plugin/safepause?path={sp_server.name}&z={layer['z']}")
    assert status == 200, body
    preview = body["from_height"]
    assert preview["start"] == preview["pos"] == layer["pos"] and preview["prelude"], preview

    reply, sends = recover(sp_server, path=sp_server.name, z=layer["z"])
    assert reply["start"] == layer["pos"] and reply["prelude"] == preview["prelude"]
    prelude, rest = split_at_reset(sends)
    assert prelude == preview["prelude"]
    first = line_index(sp_server, layer["pos"])
    check_rest_exactly_once(sp_server, rest, first)
    # the firmware model, homed at the origin: heat before any extrusion, XY travel above the part,
    # and the deposits are the file's own from that layer on
    lines = [line for line, _ in sp_server.lines]
    reference = Firmware("marlin").run(lines)
    want = [m for m in reference.moves if m.line > first and m.deposits]
    fw = Firmware("marlin")
    fw.run(prelude)
    part = max(m.end[2] for m in reference.moves if m.line <= first and m.deposits)
    for move in fw.moves:
        assert move.e <= TOL or (move.target > 0 and move.temp >= move.target - TOL), f"cold extrusion: {move}"
        if move.travels_xy:
            assert min(move.start[2], move.end[2]) > part + TOL, f"XY travel into the part ({part}): {move}"
    fw.moves = []
    fw.lines = first
    fw.run(rest[: len(lines) - first])
    got = [m for m in fw.moves if m.deposits]
    assert len(got) == len(want) and all(m.end[2] >= layer["z"] - 0.005 for m in got)
    for a, b in zip(got, want):
        assert a.end == pytest.approx(b.end, abs=TOL) and a.e == pytest.approx(b.e, abs=TOL), (a, b)


def test_touch_off_after_a_power_loss_continues_with_the_next_layer_at_its_height(sp_server):
    """The firmware model is the printer: reset (coordinates lost) with the head where the print left
    it. The touch-off's start lines, then jogs of 0.05 mm down while the nozzle is above the top of the
    print under it (what a sheet of paper tells the user), confirm: the rest of the print is the file's
    own from the next layer on, at the file's height (within one jog), heat before extruding, XY travel
    above the part."""
    sent_before, _ = fail_mid_print(sp_server)
    rec = get_recovery(sp_server, power_lost=True)
    physical = Firmware("marlin").run(sent_before)
    part = physical.max_deposit_z
    fw = Firmware("marlin")  # reset: the head stays where it was
    fw.pos = list(physical.pos)
    mark = sp_server.serial_mark()
    status, body = sp_server.command("touch_off", action="start")
    assert status == 200, body
    started = body["touch_off"]
    fw.run(started["lines"])
    assert not fw.errors, fw.errors
    for move in fw.moves:
        if move.travels_xy:
            assert min(move.start[2], move.end[2]) > part, f"XY travel into the part ({part}): {move}"
    jogs = 0
    while fw.pos[2] - part > 0.05 + TOL:  # the paper still slides under the nozzle
        status, body = sp_server.command("touch_off", action="jog", distance=-0.05)
        assert status == 200, body
        fw.run(["G91", "G1 Z-0.05", "G90"])
        jogs += 1
    assert jogs > 0
    status, body = sp_server.command("touch_off", action="confirm")
    assert status == 200, body
    done = body["touch_off"]
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 60, interval=0.1, what="the print to finish")
    # outside a print the touch-off's lines go out without line numbers, as do OctoPrint's own polls
    housekeeping = {"M105", "M20", "M21", "M27", "M115"}
    sends = [cmd for _, cmd in sp_server.sends(mark, unnumbered=True) if cmd not in housekeeping]
    touch_lines = [*started["lines"], *["G91", "G1 Z-0.05 F600", "G90"] * jogs]
    assert sends[: len(touch_lines)] == touch_lines
    prelude, rest = split_at_reset(sends[len(touch_lines) :])
    assert prelude == done["prelude"], (prelude[:5], done["prelude"][:5])
    first = line_index(sp_server, done["start"])
    check_rest_exactly_once(sp_server, rest, first)
    fw.moves = []
    fw.run(prelude)
    for move in fw.moves:
        assert move.e <= TOL or (move.target > 0 and move.temp >= move.target - TOL), f"cold extrusion: {move}"
        if move.travels_xy:
            assert min(move.start[2], move.end[2]) > part + TOL, f"XY travel into the part ({part}): {move}"
    lines = [line for line, _ in sp_server.lines]
    reference = Firmware("marlin").run(lines)
    want = [m for m in reference.moves if m.line > first and m.deposits]
    fw.moves = []
    fw.lines = first
    fw.run(rest[: len(lines) - first])
    got = [m for m in fw.moves if m.deposits]
    assert got and len(got) == len(want)
    for a, b in zip(got, want):
        assert a.end[:2] == pytest.approx(b.end[:2], abs=TOL) and a.e == pytest.approx(b.e, abs=TOL), (a, b)
        assert a.end[2] == pytest.approx(b.end[2], abs=0.05 + TOL), (a, b)  # within one jog
    assert rec["layer_z"] < done["layer_z"]


def test_a_print_cancelled_on_purpose_is_not_offered(sp_server):
    sp_server.start_print(DROP_AT)
    status, body = sp_server.api("POST", "/api/job", {"command": "cancel"})
    assert status == 204, body
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 30, interval=0.1, what="the cancel")
    assert get_recovery(sp_server) is None
