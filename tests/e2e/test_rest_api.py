"""SafePause's REST API against a real `octoprint serve` printing a real slicer file on the virtual printer.

Proves the job-hold pause end to end: OctoPrint says "Paused" with frozen progress while held, the
serial line shows the pause lines right after the last file line and nothing of the file until the
resume, and every file line reaches the printer exactly once (the saved line re-sent once). Also the
refusals (409), bad requests (400), permissions (403 / the plugin's own permission) and a disconnect
during a hold.

Uses `sp_server` (conftest.py): its own server with pinned temperatures and the slice of a corpus file.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
import sandbox as sandbox_module

from .conftest import SafePauseServer, make_slice

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

STATE_FIELDS = {
    "state", "since", "holding", "error", "reason", "source", "file", "filepos", "saved_line", "snapshot",
    "warnings",
}  # fmt: skip
PAUSE_AT = 0.35  # of the slice's bytes: past the start G-code and the intro line, well before the end
OPERATOR = ("operator", "operator-pass-1")  # created by test_plugin_permission_alone_may_pause


@pytest.fixture(autouse=True)
def ready(sp_server):
    sp_server.ensure_ready()
    return sp_server


def pause_and_wait(server, user="admin", **params):
    """POST pause (202), then wait for "paused" and for the pause lines to be out."""
    mark = server.serial_mark()
    status, body = server.command("pause", user=user, **params)
    assert status == 202, (status, body)
    assert body["state"]["state"] in ("pausing", "paused"), body
    state = server.wait_sp("paused")
    server.wait_serial_quiet(mark)
    return body, state


# ---------------------------------------------------------------------------------------------- idle


def test_get_while_idle_has_every_field(sp_server):
    state = sp_server.sp_state()
    assert set(state) >= STATE_FIELDS, STATE_FIELDS - set(state)
    assert state["state"] == "idle" and state["holding"] is False
    assert state["reason"] is None and state["saved_line"] is None and state["snapshot"] is None
    assert state["warnings"] == [] and isinstance(state["since"], float)
    # the read-only viewer has STATUS: it may look
    assert sp_server.sp_state(user="viewer")["state"] == "idle"
    status, body = sp_server.api("GET", "/api/plugin/safepause", user=None)
    assert status == 403 and "error" in body, (status, body)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("pause", "cannot pause: the printer is operational, not printing"),
        ("resume", "cannot resume: not paused (state: idle)"),
        ("cancel", "cannot cancel: nothing to cancel (state: idle)"),
    ],
)
def test_refused_while_idle(sp_server, command, message):
    status, body = sp_server.command(command)
    assert status == 409, (status, body)
    assert body["error"] == message
    assert body["state"]["state"] == "idle"
    assert sp_server.job()["state"] == "Operational"


# ------------------------------------------------------------------------------------- bad requests


def raw_post(server, data: bytes, content_type="application/json"):
    headers = {"X-Api-Key": sandbox_module.ADMIN[2]}
    if content_type:
        headers["Content-Type"] = content_type
    return server.sb._request("POST", "/api/plugin/safepause", data, headers, 10)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        # answered by OctoPrint's SimpleApiPlugin dispatcher before the plugin sees the request
        (b'{"command": "frobnicate"}', 400, "command is invalid"),
        (b"{}", 400, "command is invalid"),
        (b'{"reason": "x"}', 400, "command is invalid"),
        (b'{"command": "pause"', 400, None),  # OctoPrint's generic Werkzeug text, see the report
        # a JSON array or string that happens not to contain "command": the same generic 400
        (b"[1, 2]", 400, "command is invalid"),
        (b'"pause"', 400, "command is invalid"),
        # the plugin's own validation
        (b'{"command": "pause", "reason": 5}', 400, "'reason' must be a string"),
        (b'{"command": "pause", "reason": ["a"]}', 400, "'reason' must be a string"),
        (b'{"command": "pause", "source": {}}', 400, "'source' must be a string"),
        (b'{"command": "pause", "reason": "' + b"x" * 201 + b'"}', 400, "'reason' is longer than 200 characters"),
    ],
)  # fmt: skip
def test_bad_requests_get_400_with_a_json_error(sp_server, body, status, message):
    got, reply = raw_post(sp_server, body)
    if message is None:
        assert got == status and isinstance(reply, dict) and reply.get("error"), (got, reply)
    else:
        assert (got, reply) == (status, {"error": message})
    assert sp_server.sp_state()["state"] == "idle"


def test_wrong_content_type_gets_415_from_octoprint(sp_server):
    status, reply = raw_post(sp_server, b'{"command": "pause"}', content_type=None)
    assert status == 415 and "Content-Type was not 'application/json'" in reply["error"], reply


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"42",
        b"true",
        b"1.5",
        b'["command"]',
        b'["command", "pause"]',
        b'{"command": ["pause"]}',
        b'{"command": {"a": 1}}',
        b'{"command": null}',
        b'{"command": 5}',
    ],
)
def test_non_object_bodies_get_400_not_500(sp_server, body):
    """README: "malformed bodies get 400 ... with a JSON error". OctoPrint's dispatcher
    (get_json_command_from_request) assumes a JSON object with a hashable command and raises TypeError
    on most of these (a 500, and an ERROR traceback "Error while executing SimpleApiPlugin safepause" in
    octoprint.log); the plugin's before_request handler must answer them first."""
    status, reply = raw_post(sp_server, body)
    assert status == 400 and isinstance(reply, dict) and reply.get("error"), (status, reply)


# ------------------------------------------------------------------------------------ permissions


def test_anonymous_post_is_refused(sp_server):
    # Without a session and without an API key, OctoPrint's CSRF check answers first (400, JSON).
    status, body = sp_server.command("pause", user=None)
    assert (status, body) == (400, {"error": "CSRF validation failed"})
    # With a valid CSRF cookie and header, as a browser that is not logged in: 403 from the API guard.
    session = requests.Session()
    session.trust_env = False
    assert session.get(sp_server.sb.url + "/", timeout=10).status_code == 200
    token = next(value for name, value in session.cookies.items() if name.startswith("csrf_token"))
    response = session.post(
        sp_server.sb.url + "/api/plugin/safepause",
        json={"command": "pause"},
        headers={"X-CSRF-Token": token},
        timeout=10,
    )
    assert response.status_code == 403, response.text
    assert response.headers["Content-Type"].startswith("application/json") and response.json()["error"]


def ensure_operator(server) -> str:
    """A user whose only group grants only PLUGIN_SAFEPAUSE_CONTROL (no PRINT, no STATUS); its API key."""
    status, groups = server.api("GET", "/api/access/groups")
    assert status == 200
    if "safepause_only" not in {group["key"] for group in groups["groups"]}:
        body = {
            "key": "safepause_only",
            "name": "SafePause only",
            "permissions": ["PLUGIN_SAFEPAUSE_CONTROL"],
            "subgroups": [],
        }
        status, reply = server.api("POST", "/api/access/groups", body)
        assert status == 200, (status, reply)
    name, password = OPERATOR
    if server.api("GET", f"/api/access/users/{name}")[0] == 404:
        body = {"name": name, "password": password, "active": True, "groups": ["safepause_only"]}
        status, reply = server.api("POST", "/api/access/users", body)
        assert status == 200, (status, reply)
    status, reply = server.api("POST", f"/api/access/users/{name}/apikey")
    assert status == 200 and reply["apikey"], (status, reply)
    return reply["apikey"]


def as_user(server, apikey, method, path, body=None):
    headers = {"X-Api-Key": apikey, "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    return server.sb._request(method, path, data, headers, 10)


def test_plugin_permission_alone_may_pause(sp_server):
    apikey = ensure_operator(sp_server)
    sp_server.start_print(PAUSE_AT)

    # the read-only viewer may not pause (no PRINT, no plugin permission): JSON 403, nothing happens
    status, body = sp_server.command("pause", user="viewer")
    assert (status, body) == (403, {"error": "you are not allowed to pause prints"})
    assert sp_server.command("cancel", user="viewer") == (403, {"error": "you are not allowed to cancel prints"})
    assert sp_server.sp_state()["state"] == "idle"

    # the operator may not use OctoPrint's own job commands ...
    assert as_user(sp_server, apikey, "POST", "/api/job", {"command": "pause", "action": "pause"})[0] == 403
    # ... but pauses, resumes and cancels with SafePause
    status, body = as_user(sp_server, apikey, "POST", "/api/plugin/safepause", {"command": "pause"})
    assert status == 202, (status, body)
    state = sp_server.wait_sp("paused")
    assert state["source"] == "user:operator" and state["reason"] is None
    # the viewer sees the pause, but may not resume it
    assert sp_server.sp_state(user="viewer")["state"] == "paused"
    assert sp_server.command("resume", user="viewer")[0] == 403
    # whoever may pause may also read the state (the operator's group lacks STATUS)
    status, body = as_user(sp_server, apikey, "GET", "/api/plugin/safepause")
    assert status == 200 and body["state"] == "paused"
    status, body = as_user(sp_server, apikey, "POST", "/api/plugin/safepause", {"command": "cancel"})
    assert status == 202, (status, body)
    sp_server.wait_sp("idle")
    sp_server.sb.wait_state("Operational", timeout=15)


# ------------------------------------------------------------------------- pause, resume, finish


def test_pause_hold_resume_finish_every_line_once(sp_server):
    start = sp_server.start_print(PAUSE_AT)
    body, state = pause_and_wait(sp_server, reason="  filament runout  ")

    # the state while held
    assert state["reason"] == "filament runout" and state["source"] == "user:admin"
    assert state["file"] == sp_server.name and state["holding"] is True and state["error"] is None
    assert isinstance(state["filepos"], int) and 0 < state["filepos"] < sp_server.size
    k = sp_server.held_line_index(state["filepos"])
    assert state["saved_line"] == sp_server.lines[k][0], (
        k,
        state["saved_line"],
        sp_server.lines[k - 1 : k + 2],
    )
    snapshot = state["snapshot"]
    assert {"x", "y", "z", "e", "relative_e", "homed"} <= set(snapshot) and snapshot["z"] > 0
    assert snapshot["relative_e"] is False  # the file is absolute-E (M82)

    # a second pause is refused, the first one is untouched
    status, refused = sp_server.command("pause", reason="again")
    assert status == 409 and refused["error"] == "cannot pause: already paused", refused
    assert refused["state"]["reason"] == "filament runout"

    # OctoPrint says "Paused" (SafePause's pause is its pause) and its progress stands still; nothing
    # goes out
    held_mark = sp_server.serial_mark()
    first = sp_server.job()
    time.sleep(1.0)
    second = sp_server.job()
    assert first["state"] == second["state"] == "Paused"
    assert first["progress"]["filepos"] == second["progress"]["filepos"]
    assert first["progress"]["completion"] == second["progress"]["completion"]
    assert sp_server.sends(held_mark) == [], "lines were sent while paused"
    assert sp_server.sp_state()["state"] == "paused"

    # the serial line: the file up to the hold, then the pause lines, among them a lift above the part
    resume_mark = sp_server.serial_mark()
    held = [cmd for _, cmd in sp_server.sends(start, resume_mark)]
    lifts = [float(m.group(1)) for m in (re.match(r"G1 Z([\d.]+)", c) for c in held[-15:]) if m]
    assert lifts and max(lifts) > snapshot["z"], held[-15:]

    status, body = sp_server.command("resume")
    assert status == 202 and body["state"]["state"] in ("resuming", "idle"), (status, body)
    status, again = sp_server.command("resume")  # resuming or already done: either way not paused
    assert status == 409 and again["error"].startswith("cannot resume: not paused"), again
    sp_server.wait_sp("idle")
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 30, what="print finished")

    events = [name for name, _ in sp_server.detector()["events"]]
    # OctoPrint's own events around SafePause's, once each, in order (SafePause's pause is OctoPrint's)
    assert events[-5:] == [
        "PrintPaused",
        "plugin_safepause_paused",
        "PrintResumed",
        "plugin_safepause_resumed",
        "PrintDone",
    ], events[-7:]
    resumed = [cmd for _, cmd in sp_server.wait_serial_quiet(resume_mark)]
    held = [cmd for _, cmd in sp_server.sends(start, resume_mark)]
    assert sp_server.exactly_once(held, resumed, k) == []


def test_the_files_m600_is_a_filament_change_run_by_the_host(sp_server, tmp_path):
    """The slice with an M600 put in (as PrusaSlicer writes a colour change): the change happens at
    that line, Purge over REST, OctoPrint's own Resume; the M600 never reaches the printer and every
    other line goes out once, in order."""
    lines = make_slice(tmp_path / "m600_slice.gcode").read_text().splitlines(keepends=True)
    counted, at = 0, 700
    for index, raw in enumerate(lines):
        counted += bool(raw.split(";", 1)[0].strip())
        if counted == at:
            lines.insert(index, "M600\n")
            break
    path = tmp_path / "m600_slice.gcode"
    path.write_text("".join(lines))
    assert sp_server.sb.upload(path)[0] == 201
    changer = SafePauseServer(sp_server.sb, path)
    changer.lines = [line for line in changer.lines if line[0] != "M600"]  # what must reach the printer

    start = changer.start_print()
    state = changer.wait_sp("paused", timeout=60)
    assert state["change"] == {"step": "unloaded", "purged": 0.0}, state
    assert state["source"] == "file" and state["reason"] == f"M600 in the file (line {at})"
    assert changer.job()["state"] == "Paused"
    assert changer.command("purge", length=7.5)[0] == 202
    changer.wait_for(lambda: changer.sp_state()["change"]["purged"] == 7.5, 10, what="purged")
    assert changer.command("purge", length=0)[0] == 400  # a length must be more than 0

    resume_mark = changer.serial_mark()
    assert changer.api("POST", "/api/job", {"command": "pause", "action": "resume"}) == (204, None)
    changer.wait_sp("idle")
    changer.wait_for(lambda: changer.job()["state"] == "Operational", 30, what="print finished")
    held = [cmd for _, cmd in changer.sends(start, resume_mark)]
    resumed = [cmd for _, cmd in changer.wait_serial_quiet(resume_mark)]
    assert "M600" not in held + resumed
    assert any(cmd.startswith("G1 E-") for cmd in held[-12:])  # unloaded at the change position
    assert changer.exactly_once(held, resumed, at - 1) == []


def test_pause_while_the_printer_is_busy_takes_the_hold_without_a_line(sp_server):
    """Like a long M109 / M190 / G4: the printer answers nothing for 3 s (the virtual printer's
    `!!DEBUG:sleep`), so no file line reaches SafePause's hook. After its hold_timeout (2 s) the
    controller takes the hold itself; nothing is saved, nothing is lost."""
    start = sp_server.start_print(PAUSE_AT)
    mark = sp_server.serial_mark()
    assert sp_server.api("POST", "/api/printer/command", {"command": "!!DEBUG:sleep 3"})[0] == 204
    sp_server.wait_for(
        lambda: "!!DEBUG:sleep 3" in [c for _, c in sp_server.sends(mark, unnumbered=True)],
        5,
        what="sleep sent",
    )
    asked = time.monotonic()
    status, body = sp_server.command("pause", reason="busy")
    assert status == 202 and body["state"]["state"] == "pausing", body
    time.sleep(0.5)
    waiting = sp_server.sp_state()
    assert waiting["state"] == "pausing" and waiting["holding"] is False, waiting
    state = sp_server.wait_sp("paused", timeout=6)
    assert 1.5 < time.monotonic() - asked < 5
    assert state["holding"] is True and state["saved_line"] is None, state
    k = sp_server.held_line_index(state["filepos"])
    assert sp_server.lines[k - 1][1] == state["filepos"]  # the hold lies between two lines
    # the printer wakes up and runs the pause lines
    sp_server.wait_for(lambda: len(sp_server.sends(start)) > k + 3, 10, what="pause lines")
    sp_server.wait_serial_quiet(start)
    held_mark = sp_server.serial_mark()
    time.sleep(0.5)
    assert sp_server.sends(held_mark) == [] and sp_server.job()["state"] == "Paused"

    resume_mark = sp_server.serial_mark()
    held = [cmd for _, cmd in sp_server.sends(start, resume_mark)]
    assert sp_server.command("resume")[0] == 202
    sp_server.wait_sp("idle")
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 30, what="print finished")
    resumed = [cmd for _, cmd in sp_server.wait_serial_quiet(resume_mark)]
    assert sp_server.exactly_once(held, resumed, k) == []


# -------------------------------------------------------------------------------------- cancel


def test_cancel_while_paused_runs_octoprints_cancel_script_and_releases_the_hold(sp_server):
    sp_server.start_print(PAUSE_AT)
    pause_and_wait(sp_server, reason="cancel me")
    mark = sp_server.serial_mark()
    asked = time.time()
    status, body = sp_server.command("cancel")
    assert status == 202 and body["state"]["state"] in ("cancelling", "idle"), (status, body)
    sp_server.sb.wait_state("Operational", timeout=10)
    assert sp_server.wait_sp("idle")["holding"] is False
    ended = time.time()

    # OctoPrint's afterPrintCancelled script (motors off, heaters off, fan off) went out at once
    sends = sp_server.wait_serial_quiet(mark)
    commands = [cmd for _, cmd in sends]
    for expected in ("M84", "M104 T0 S0", "M140 S0", "M106 S0"):
        assert expected in commands, commands
    script_at = next(stamp for stamp, cmd in sends if cmd == "M140 S0")
    assert script_at - asked < 3.0 and ended - asked < 5.0
    assert not any(cmd.startswith("G1 X") and " E" in cmd for cmd in commands), commands  # no file line
    events = [name for name, _ in sp_server.detector()["events"]]
    assert "PrintCancelled" in events[-4:] and "plugin_safepause_cancelled" in events[-4:], events[-6:]
    assert "PrintDone" not in events[-4:]
    status, job = sp_server.api("GET", "/api/job")
    assert job["state"] == "Operational"

    # the hold is gone: a new print starts and streams on
    sp_server.start_print()
    job = sp_server.wait_filepos(0.5)
    assert job["state"] == "Printing"
    assert sp_server.api("POST", "/api/job", {"command": "cancel"})[0] == 204
    sp_server.sb.wait_state("Operational", timeout=15)
    assert sp_server.sp_state()["state"] == "idle"


def file_state(lines, k):
    """Hotend target and part fan speed after the file's first k lines (a small independent
    reading of what SafePause's tracker must have at a hold after them)."""
    target = fan = None
    for line in lines[:k]:
        words = line.split()
        if words[0] not in ("M104", "M109", "M106", "M107"):
            continue
        value = next((float(w[1:]) for w in words[1:] if w.startswith("S")), None)
        if words[0] in ("M104", "M109") and value is not None:
            target = value
        elif words[0] == "M106":
            fan = value if value is not None else 255.0
        elif words[0] == "M107":
            fan = 0.0
    return target, fan


def test_commands_sent_between_prints_do_not_leak_into_the_next_pause(sp_server):
    """Commands sent while no print runs belong to no print: OctoPrint's own afterPrintCancelled script
    (M84, M104 T0 S0, M140 S0, M106 S0), which goes out after the PrintCancelled event, and what a user
    sends before the next print (here: the Temperature tab's "off" and a Z jog from the Control tab).
    SafePause must not replay them into the next print's tracked state at a pause: with a hotend target
    of 0 it neither retracts nor primes, restores the part fan to 0 on resume and its long-hold heater
    policy finds no heater to switch off; a jog's Z raises the "highest printed point"."""
    sp_server.start_print(0.3)
    assert sp_server.api("POST", "/api/job", {"command": "cancel"})[0] == 204
    sp_server.sb.wait_state("Operational", timeout=15)
    mark = sp_server.serial_mark()
    assert (
        sp_server.api("POST", "/api/printer/tool", {"command": "target", "targets": {"tool0": 0}})[0] == 204
    )
    jog = {"commands": ["G91", "G1 Z5 F600", "G90"]}
    assert sp_server.api("POST", "/api/printer/command", jog)[0] == 204
    sp_server.wait_for(
        lambda: [c for _, c in sp_server.sends(mark, unnumbered=True)][-1:] == ["G90"], 10, what="jog sent"
    )

    sp_server.start_print(0.6)
    _, state = pause_and_wait(sp_server)
    k = sp_server.held_line_index(state["filepos"])
    target, fan = file_state([line for line, _ in sp_server.lines], k)
    snapshot = state["snapshot"]
    problems = []
    if snapshot["tool_temps"].get("0") != target:
        problems.append(f"hotend target {snapshot['tool_temps']} (the file set {target})")
    if snapshot["fans"].get("0") != fan:
        problems.append(f"part fan {snapshot['fans']} (the file set {fan})")
    if snapshot["max_z"] > snapshot["z"] + 0.5:
        problems.append(f"max_z {snapshot['max_z']} above the layer being printed (z {snapshot['z']})")
    if state["warnings"]:
        problems.append(f"warnings {state['warnings']}")
    assert sp_server.command("cancel")[0] == 202
    sp_server.sb.wait_state("Operational", timeout=15)
    assert problems == [], "\n".join(problems)


# ------------------------------------------------------------------------- connection and holds


def test_pause_while_disconnected_is_refused(sp_server):
    assert sp_server.sb.disconnect()[0] == 204
    sp_server.sb.wait_state("Offline", "Closed", timeout=10)
    status, body = sp_server.command("pause")
    assert status == 409, (status, body)
    assert body["error"] == "cannot pause: the printer is offline, not printing"
    sp_server.sb.connect(profile="corpus_210x210x205")


def test_disconnect_during_a_hold_ends_it_cleanly(sp_server):
    sp_server.start_print(PAUSE_AT)
    pause_and_wait(sp_server, reason="unplugged")
    log_before = len(sp_server.log_records())
    assert sp_server.sb.disconnect()[0] == 204
    state = sp_server.wait_sp("idle")
    assert state["holding"] is False
    assert state["error"] and "the hold ended because of Disconnect" in state["error"], state
    sp_server.sb.wait_state("Offline", "Closed", timeout=10)
    events = [name for name, _ in sp_server.detector()["events"]]
    assert "plugin_safepause_cancelled" in events[-4:], events[-6:]

    assert sp_server.plugin_log_problems(since=log_before) == []

    # connected again, the printer prints and SafePause pauses as before
    sp_server.sb.connect(profile="corpus_210x210x205")
    sp_server.start_print(PAUSE_AT)
    pause_and_wait(sp_server)
    assert sp_server.command("cancel")[0] == 202
    sp_server.sb.wait_state("Operational", timeout=10)


# ---------------------------------------------------------------------------------------- the log


def test_octoprint_log_has_no_safepause_errors(sp_server):
    """Runs last in this file: nothing in the whole session of this server shows the plugin failing
    (its loggers' errors, a traceback through its code, a 5xx on its routes)."""
    problems = sp_server.plugin_log_problems()
    assert problems == [], "\n".join(problems)
