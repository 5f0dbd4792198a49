"""SafePause's helper API as another plugin uses it, in a real `octoprint serve`.

The test-only plugin tests/e2e/plugins/safepause_detector.py calls the helpers `pause` / `resume` /
`cancel` / `get_state` from HTTP threads and from inside its own G-code queuing hook (OctoPrint's comm
thread, with the comm's job and send locks held), and records the events it receives. Proves: the
helpers answer True / False at once (never raise, never block), a pause from another plugin's hook
neither deadlocks nor loses a line, and the plugin_safepause_* events carry what the README says.

Uses `sp_server` (conftest.py): its own server with pinned temperatures and the slice of a corpus file.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PAUSE_AT = 0.35  # of the slice's bytes: past the start G-code and the intro line, well before the end
EVENT_FIELDS = {"reason", "source", "file", "origin", "filepos", "position"}


@pytest.fixture(autouse=True)
def ready(sp_server):
    sp_server.ensure_ready()
    return sp_server


def counts(server):
    """(number of events, number of helper results) the detector holds now."""
    data = server.detector()
    return len(data["events"]), len(data["results"])


def new_events(server, since):
    return server.detector()["events"][since:]


def wait_events(server, since, *names, timeout=15.0):
    """Waits until the detector received `names` (in this order, others may come between)."""

    def check():
        got = [name for name, _ in new_events(server, since)]
        it = iter(got)
        return got if all(name in it for name in names) else None

    server.wait_for(check, timeout, what=f"events {names}")
    return new_events(server, since)


def check_payload(server, payload, reason, source):
    assert set(payload) >= EVENT_FIELDS, payload
    assert payload["reason"] == reason and payload["source"] == source
    assert payload["file"] == server.name and payload["origin"] == "local"
    assert isinstance(payload["filepos"], int) and 0 < payload["filepos"] < server.size
    position = payload["position"]
    assert set(position) >= {"x", "y", "z", "e"} and position["z"] > 0, position


def test_detect_pauses_a_second_detect_is_refused_clear_resumes(sp_server):
    events_before, results_before = counts(sp_server)
    assert sp_server.detector("clear")[1]["result"] is False  # nothing to resume: False, no exception
    sp_server.start_print(PAUSE_AT)

    status, reply = sp_server.detector("detect", reason="spaghetti")
    assert status == 200 and reply["result"] is True, reply
    assert reply["state"]["state"] in ("pausing", "paused") and reply["state"]["source"] == "plugin:detector"
    state = sp_server.wait_sp("paused")
    assert state["reason"] == "spaghetti" and state["source"] == "plugin:detector" and state["holding"]
    assert sp_server.job()["state"] == "Paused"  # SafePause's pause is OctoPrint's pause

    status, reply = sp_server.detector("detect", reason="more spaghetti")
    assert status == 200 and reply["result"] is False, reply  # wrong state: False, no exception
    assert reply["state"]["state"] == "paused" and reply["state"]["reason"] == "spaghetti"

    status, reply = sp_server.detector("clear")
    assert status == 200 and reply["result"] is True, reply
    sp_server.wait_sp("idle")
    events = wait_events(
        sp_server, events_before, "plugin_safepause_paused", "plugin_safepause_resumed", "PrintDone"
    )
    names = [name for name, _ in events]
    assert names.count("plugin_safepause_paused") == 1 and "PrintCancelled" not in names, names
    for name, payload in events:
        if name.startswith("plugin_safepause_"):
            check_payload(sp_server, payload, "spaghetti", "plugin:detector")
    paused = dict(events)["plugin_safepause_paused"]
    assert paused["filepos"] == state["filepos"]
    assert paused["position"]["z"] == state["snapshot"]["z"]

    results = sp_server.detector()["results"][results_before:]
    assert [(r[0], r[1]) for r in results] == [
        ("clear", False),
        ("detect", True),
        ("detect", False),
        ("clear", True),
    ]
    assert all(r[3] < 0.5 for r in results), results  # the helpers only enqueue


def test_a_runout_sensor_changes_filament_through_the_helper(sp_server):
    events_before, _ = counts(sp_server)
    sp_server.start_print(PAUSE_AT)
    status, reply = sp_server.detector("runout", reason="filament runout")
    assert status == 200 and reply["result"] is True, reply
    state = sp_server.wait_sp("paused", timeout=15)
    assert state["change"]["step"] == "unloaded" and state["source"] == "plugin:detector"
    events = wait_events(sp_server, events_before, "plugin_safepause_paused", "plugin_safepause_filament_change")
    assert dict(events)["plugin_safepause_filament_change"]["step"] == "unloaded"
    assert sp_server.detector("clear")[1]["result"] is True  # resume: loads, purges, goes back
    sp_server.wait_sp("idle", timeout=20)
    wait_events(sp_server, events_before, "plugin_safepause_resumed", "PrintDone", timeout=60)


def test_abort_during_a_pause_cancels_the_print(sp_server):
    events_before, _ = counts(sp_server)
    assert sp_server.detector("abort")[1]["result"] is False  # no pause to cancel
    sp_server.start_print(PAUSE_AT)
    assert sp_server.detector("detect", reason="blob")[1]["result"] is True
    sp_server.wait_sp("paused")

    status, reply = sp_server.detector("abort")
    assert status == 200 and reply["result"] is True, reply
    sp_server.sb.wait_state("Operational", timeout=10)
    assert sp_server.wait_sp("idle")["holding"] is False
    events = wait_events(sp_server, events_before, "plugin_safepause_paused", "plugin_safepause_cancelled")
    names = [name for name, _ in events]
    assert "PrintCancelled" in names and "PrintDone" not in names and "plugin_safepause_resumed" not in names
    check_payload(sp_server, dict(events)["plugin_safepause_cancelled"], "blob", "plugin:detector")
    assert sp_server.detector("clear")[1]["result"] is False


def test_pause_from_inside_another_plugins_queuing_hook(sp_server):
    """The detector calls the pause helper from its own queuing hook on OctoPrint's comm thread, when
    a file line it watches for passes. SafePause's hook (order 1) has already let that line through, so
    the hold takes the next one: no deadlock, no line lost, every line once."""
    events_before, results_before = counts(sp_server)
    expected = [line for line, _ in sp_server.lines]
    j = next(
        i
        for i in range(len(expected) // 2, len(expected))
        if expected[i].startswith("G1 X") and " E" in expected[i] and expected.count(expected[i]) == 1
    )
    match = expected[j]
    assert sp_server.detector("arm", match=match)[0] == 200

    start = sp_server.start_print()
    sp_server.wait_for(lambda: len(sp_server.detector()["results"]) > results_before, 30, what="hook fired")
    result = sp_server.detector()["results"][results_before]
    command, value, thread, elapsed, line = result
    assert (command, value, line) == ("hook", True, match), result
    assert thread.startswith("comm."), result  # OctoPrint's comm thread, inside its send path
    assert elapsed < 0.05, result  # the helper only enqueued

    state = sp_server.wait_sp("paused")
    assert state["source"] == "plugin:detector:hook" and state["reason"] == "seen " + match
    k = sp_server.held_line_index(state["filepos"])
    assert k == j + 1 and state["saved_line"] == expected[j + 1], (k, j, state["saved_line"])

    sp_server.wait_serial_quiet(start)  # the pause lines are out
    resume_mark = sp_server.serial_mark()
    held = [cmd for _, cmd in sp_server.sends(start, resume_mark)]
    assert sp_server.detector("clear")[1]["result"] is True
    sp_server.wait_sp("idle")
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 30, what="print finished")
    events = wait_events(
        sp_server, events_before, "plugin_safepause_paused", "plugin_safepause_resumed", "PrintDone"
    )
    check_payload(sp_server, dict(events)["plugin_safepause_paused"], "seen " + match, "plugin:detector:hook")
    resumed = [cmd for _, cmd in sp_server.wait_serial_quiet(resume_mark)]
    assert sp_server.exactly_once(held, resumed, k) == []


def test_octoprint_log_has_no_safepause_errors(sp_server):
    """Nothing so far in this server's log shows SafePause or the detector failing (test_rest_api.py
    checks again at its end, for the whole session)."""
    problems = sp_server.plugin_log_problems()
    assert problems == [], "\n".join(problems)
