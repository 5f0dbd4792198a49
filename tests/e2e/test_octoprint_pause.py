"""A SafePause pause is OctoPrint's pause, seen the way clients see OctoPrint (issue 14): a farm manager
polling /api/job and /api/printer, a plugin recording PrintPaused / PrintResumed, OctoPrint's own
buttons in the browser, another plugin's printer.pause_print(), the printer's //action:pause, and
OctoPrint's own Cancel. Specified in docs/native-pause.md and octoprint_safepause/adapter/native_guard.py."""

from __future__ import annotations

import re
import threading
import time

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
    sb = start_server(REPO / "test-artifacts" / "octoprint-pause")
    yield sb
    stop_server(sb)


@pytest.fixture(autouse=True)
def idle_after(server):
    yield
    ensure_idle(server)


def detector_events(sb) -> list:
    return [name for name, _payload in sb.api("GET", "/api/plugin/safepause_detector")[1]["events"]]


def detector(sb, command):
    status, reply = sb.api("POST", "/api/plugin/safepause_detector", {"command": command})
    assert status == 200, reply
    return reply


def printer_view(sb) -> tuple:
    """What a farm manager polls: (/api/job state, /api/printer state text, its paused flag, filepos)."""
    job_now = job(sb)
    printer = sb.api("GET", "/api/printer")[1]
    return job_now["state"], printer["state"]["text"], printer["state"]["flags"]["paused"], job_now["progress"]["filepos"]


class Poller:
    """/api/job and /api/printer every 0.1 s in a thread, as OctoFarm or FDM Monster poll them (each
    change of the two states and the paused flag is kept; the two requests are a moment apart)."""

    def __init__(self, sb):
        self.sb, self.seen, self._stop = sb, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.1):
            view = printer_view(self.sb)
            if not self.seen or self.seen[-1][:3] != view[:3]:
                self.seen.append(view)

    def __enter__(self):
        self.seen.append(printer_view(self.sb))  # before anything happens
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        view = printer_view(self.sb)  # and once after everything happened
        if self.seen[-1][:3] != view[:3]:
            self.seen.append(view)


def test_a_farm_manager_polling_rest_sees_paused_and_resumes_with_octoprints_resume(server):
    start_print(server)
    before = detector_events(server)
    with Poller(server) as poller:
        # OctoPrint's own Pause (/api/job, what every app sends) is a SafePause pause
        assert server.api("POST", JOB, {"command": "pause", "action": "pause"}) == (204, None)
        state = wait_safepause(server, "paused")
        assert state["reason"] == "OctoPrint's Pause button" and state["source"] == "user:admin"
        wait_for(lambda: printer_view(server)[:3] == ("Paused", "Paused", True), 10, "OctoPrint paused")
        held = printer_view(server)
        time.sleep(1.0)  # a hold holds: the progress stands still
        assert printer_view(server) == held
        # a second pause is OctoPrint's usual no-op, not an error
        assert server.api("POST", JOB, {"command": "pause", "action": "pause"}) == (204, None)
        # OctoPrint's own Resume (the Resume a farm manager offers)
        assert server.api("POST", JOB, {"command": "pause", "action": "resume"}) == (204, None)
        wait_safepause(server, "idle")
        wait_for(lambda: printer_view(server)[0] == "Printing" and filepos(server) > held[3] + 1000, 20, "printing")
        # "toggle" (OctoPrint's client, togglePause) pauses and resumes the same way
        assert server.api("POST", JOB, {"command": "pause"}) == (204, None)
        wait_safepause(server, "paused")
        wait_for(lambda: printer_view(server)[0] == "Paused", 10, "paused by toggle")
        assert server.api("POST", JOB, {"command": "pause"}) == (204, None)
        wait_safepause(server, "idle")
        wait_for(lambda: printer_view(server)[0] == "Printing", 10, "printing after toggle")
    states = [view[0] for view in poller.seen]
    assert states[0] == "Printing" and "Paused" in states and states[-1] == "Printing", poller.seen
    # OctoPrint passes through "Pausing" for a moment, as in its own pause; it never stays there
    assert all(later != "Pausing" for now, later in zip(states, states[1:]) if now == "Pausing"), poller.seen
    assert states[-1] != "Pausing"
    # every app and notifier sees OctoPrint's own events, in order, once per pause
    wait_for(lambda: detector_events(server)[len(before):].count("PrintResumed") == 2, 10, "events")
    events = [e for e in detector_events(server)[len(before):] if e in ("PrintPaused", "PrintResumed")]
    assert events == ["PrintPaused", "PrintResumed"] * 2, events
    ensure_idle(server)


def test_another_plugins_pause_print_is_a_safepause_pause(server):
    start_print(server)
    before = detector_events(server)
    detector(server, "octoprint_pause")  # OctoPrint's printer.pause_print(), as filament sensor plugins call it
    state = wait_safepause(server, "paused")
    assert state["source"] == "plugin:safepause_detector" and state["holding"]
    wait_for(lambda: job(server)["state"] == "Paused", 10, "OctoPrint paused")
    detector(server, "octoprint_resume")
    wait_safepause(server, "idle")
    wait_for(lambda: job(server)["state"] == "Printing", 10, "printing")
    wait_for(lambda: "PrintResumed" in detector_events(server)[len(before):], 10, "PrintResumed")
    names = detector_events(server)[len(before):]
    assert names.index("PrintPaused") < names.index("plugin_safepause_paused") < names.index("PrintResumed"), names
    ensure_idle(server)


def test_the_printers_action_pause_is_a_safepause_pause(server):
    start_print(server)
    # the firmware asks for a pause (a runout sensor, the printer's menu): //action:pause
    assert server.api("POST", "/api/printer/command", {"command": "!!DEBUG:action_pause"})[0] == 204
    state = wait_safepause(server, "paused")
    assert state["source"] == "printer" and state["reason"] == "the printer asked to pause (//action:pause)"
    wait_for(lambda: job(server)["state"] == "Paused", 10, "OctoPrint paused")
    assert server.api("POST", "/api/printer/command", {"command": "!!DEBUG:action_resume"})[0] == 204
    wait_safepause(server, "idle")
    wait_for(lambda: job(server)["state"] == "Printing", 10, "printing")
    ensure_idle(server)


def test_with_take_over_off_octoprints_pause_stays_its_own(server):
    assert server.api("POST", "/api/settings", {"plugins": {"safepause": {"take_over_pause": False}}})[0] == 200
    try:
        start_print(server)
        assert server.api("POST", JOB, {"command": "pause", "action": "pause"}) == (204, None)
        wait_for(lambda: job(server)["state"] == "Paused", 20, "OctoPrint's own pause")
        state = safepause(server)
        assert state["state"] == "idle" and not state["holding"]
        assert server.api("POST", JOB, {"command": "pause", "action": "resume"}) == (204, None)
        wait_for(lambda: job(server)["state"] == "Printing", 20, "printing")
    finally:
        server.api("POST", "/api/settings", {"plugins": {"safepause": {"take_over_pause": True}}})
    ensure_idle(server)


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


def test_octoprints_own_buttons_in_the_browser(server, open_page):  # noqa: F811
    ui = open_page(server)
    start_print(server)
    # OctoPrint's own Pause button: a SafePause pause, and OctoPrint's own state panel says Paused
    expect(ui.page.locator("#job_pause")).to_be_enabled(timeout=UI_TIMEOUT)
    ui.page.click("#job_pause")
    expect(ui.state).to_have_text("Paused", timeout=UI_TIMEOUT)
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Paused", timeout=UI_TIMEOUT)
    assert safepause(server)["state"] == "paused" and job(server)["state"] == "Paused"
    held_at = filepos(server)
    ui.shot("octoprint-paused")

    # OctoPrint's own Resume button (its Pause button, relabelled while paused)
    resume = ui.page.locator("#job_pause")
    expect(resume).to_contain_text("Resume", timeout=UI_TIMEOUT)
    resume.click()
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Printing", timeout=UI_TIMEOUT)
    expect(ui.state).to_have_text("Printing", timeout=UI_TIMEOUT)
    wait_for(lambda: filepos(server) > held_at + 1000, 20, "printing after OctoPrint's Resume")

    # paused again, then OctoPrint's own Cancel, with OctoPrint's own confirmation: SafePause cancels
    ui.page.click("#job_pause")
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Paused", timeout=UI_TIMEOUT)
    ui.page.click("#job_cancel")
    dialog = ui.page.locator(".modal", has_text="This will cancel your print.")
    dialog.locator("a.btn", has_text="Yes, cancel the print").click()
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Operational", timeout=30_000)
    expect(ui.state).to_have_text("Not printing")
    assert safepause(server)["state"] == "idle"
    ui.shot("octoprint-cancel")
