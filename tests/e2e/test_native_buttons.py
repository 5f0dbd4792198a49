"""OctoPrint's own Pause / Resume / Cancel (POST /api/job and its sidebar buttons) during a SafePause
pause, and pauses from inside OctoPrint (the firmware's //action:pause) during one.
The behaviour is specified in docs/native-pause.md and octoprint_safepause/adapter/native_guard.py."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect  # noqa: E402

from .test_browser import (  # noqa: E402, F401  (browser, open_page: fixtures)
    REPO,
    UI_TIMEOUT,
    browser,
    ensure_idle,
    filepos,
    job,
    open_page,
    pause_over_rest,
    safepause,
    start_print,
    start_server,
    stop_server,
    wait_for,
    wait_safepause,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

JOB = "/api/job"


@pytest.fixture(scope="module")
def server():
    sb = start_server(REPO / "test-artifacts" / "native-buttons")
    yield sb
    stop_server(sb)


@pytest.fixture(autouse=True)
def idle_after(server):
    yield
    ensure_idle(server)


def detector_events(sb) -> list:
    return [name for name, _payload in sb.api("GET", "/api/plugin/safepause_detector")[1]["events"]]


def test_octoprints_pause_is_refused_and_its_resume_resumes(server):
    start_print(server)
    pause_over_rest(server, reason="blob on the nozzle", source="plugin:tester")

    status, body = server.api("POST", JOB, {"command": "pause", "action": "pause"})
    assert status == 409, body
    assert re.fullmatch(
        r"The print is already paused by SafePause since \d\d:\d\d \(plugin tester: blob on the nozzle\); resume it",
        body["error"],
    )
    assert body["safepause"]["state"] == "paused" and body["safepause"]["reason"] == "blob on the nozzle"
    assert job(server)["state"] == "Printing"  # OctoPrint's own pause did not start ("Pausing")
    assert safepause(server)["state"] == "paused"

    held_at = filepos(server)
    assert server.api("POST", JOB, {"command": "pause", "action": "resume"}) == (204, None)
    wait_safepause(server, "idle")
    wait_for(lambda: filepos(server) > held_at + 1000, 20, "printing to go on")
    assert job(server)["state"] == "Printing"

    # "toggle" (OctoPrint's client: togglePause) resumes a SafePause pause as well
    pause_over_rest(server)
    assert server.api("POST", JOB, {"command": "pause"}) == (204, None)
    wait_safepause(server, "idle")
    assert job(server)["state"] == "Printing"


def test_octoprints_cancel_goes_through_safepause(server):
    start_print(server)
    state = pause_over_rest(server)
    saved_line = state["saved_line"]
    assert saved_line

    # the native endpoint's permission still applies
    assert server.api("POST", JOB, {"command": "cancel"}, user="viewer")[0] == 403
    assert safepause(server)["state"] == "paused"

    events_before = detector_events(server).count("plugin_safepause_cancelled")
    assert server.api("POST", JOB, {"command": "cancel"}) == (204, None)
    wait_safepause(server, "idle", timeout=10)
    server.wait_state("Operational", timeout=30)
    wait_for(
        lambda: detector_events(server).count("plugin_safepause_cancelled") == events_before + 1, 10, "event"
    )

    serial = server.serial_log.read_text(errors="replace")
    last_print = serial[serial.rindex('to "Printing"') :]
    cancelling = last_print.index('to "Cancelling"')
    # OctoPrint's own cancel script (M84, heaters off) ran once the hold was released
    assert re.search(r"Send: N\d+ M84\*", last_print[cancelling:])
    assert 'from "Cancelling" to "Operational"' in last_print


def test_firmware_pause_during_a_hold_takes_effect_after_resume(server):
    start_print(server)
    pause_over_rest(server)
    assert safepause(server)["native_pause_pending"] is False

    # The firmware asks for a pause (as a filament sensor would): OctoPrint cannot be stopped from
    # switching to "Pausing", and cannot finish pausing while SafePause holds the job.
    assert server.api("POST", "/api/printer/command", {"command": "!!DEBUG:action_pause"})[0] == 204
    wait_for(lambda: job(server)["state"] == "Pausing", 10, "OctoPrint pausing")
    state = safepause(server)
    assert state["state"] == "paused" and state["native_pause_pending"] is True

    # SafePause's resume returns to the print; OctoPrint's own pause then takes effect there.
    assert server.api("POST", "/api/plugin/safepause", {"command": "resume"})[0] == 202
    wait_safepause(server, "idle")
    server.wait_state("Paused", timeout=20)
    # SafePause is idle, so OctoPrint's own resume is OctoPrint's again
    assert server.api("POST", JOB, {"command": "pause", "action": "resume"}) == (204, None)
    server.wait_state("Printing", timeout=20)


def test_take_over_makes_octoprints_pause_a_safepause(server):
    assert (
        server.api("POST", "/api/settings", {"plugins": {"safepause": {"take_over_pause": True}}})[0] == 200
    )
    try:
        start_print(server)
        assert server.api("POST", JOB, {"command": "pause", "action": "pause"}) == (204, None)
        state = wait_safepause(server, "paused")
        assert state["reason"] == "OctoPrint's Pause button" and state["source"] == "user:admin"
        assert job(server)["state"] == "Printing"
        assert server.api("POST", JOB, {"command": "pause", "action": "pause"})[0] == 409
        assert server.api("POST", JOB, {"command": "pause", "action": "toggle"}) == (204, None)
        wait_safepause(server, "idle")
    finally:
        server.api("POST", "/api/settings", {"plugins": {"safepause": {"take_over_pause": False}}})


def test_octoprints_buttons_in_the_browser(server, open_page):  # noqa: F811
    ui = open_page(server)
    start_print(server)
    expect(ui.button("pause")).to_be_enabled(timeout=UI_TIMEOUT)
    ui.button("pause").click()
    expect(ui.state).to_have_text("Paused", timeout=UI_TIMEOUT)

    # OctoPrint's own Pause button: refused, and the browser says why
    expect(ui.page.locator("#job_pause")).to_be_enabled()
    ui.page.click("#job_pause")
    notice = ui.page.locator(".ui-pnotify", has_text="Already paused by SafePause")
    expect(notice).to_be_visible(timeout=UI_TIMEOUT)
    expect(notice).to_contain_text("Use Resume in the SafePause panel")
    expect(notice).to_contain_text("Paused by admin.")
    assert safepause(server)["state"] == "paused" and job(server)["state"] == "Printing"
    ui.shot("native-pause-refused")

    # OctoPrint's own Cancel, with OctoPrint's own confirmation: SafePause cancels
    ui.page.click("#job_cancel")
    dialog = ui.page.locator(".modal", has_text="This will cancel your print.")
    dialog.locator("a.btn", has_text="Yes, cancel the print").click()
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Operational", timeout=30_000)
    expect(ui.state).to_have_text("Not printing")
    assert safepause(server)["state"] == "idle"
    ui.shot("native-cancel")
