"""The SafePause sidebar and settings page in a real browser (headless Debian chromium, Playwright)
against a real `octoprint serve` with the virtual printer printing a real slicer file.

Screenshots and the server's logs go to test-artifacts/browser/. The helpers and fixtures here are
also used by test_octoprint_pause.py.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import sandbox as sandbox_module  # noqa: E402  (conftest puts scripts/ on sys.path)
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.e2e.conftest import wait_for  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SAFEPAUSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CORPUS_GCODE = sandbox_module.corpus.gcode_dir()
GCODE_NAME = "09_marlin_absE_0.10mm_comments_M3screw.gcode"  # 330 kB, 0.10 mm layers, absolute E
PROFILE = "corpus_210x210x205"
# The virtual printer heats at 10 °C/s, so the file's M190 S60 / M109 S210 would take 20 s per print.
# Its heaters start at the "ambient" temperature: at 210 °C those waits return at once.
FAST_HEAT = {"plugins": {"virtual_printer": {"ambientTemperature": 210.0}}}
# Moves at 30 % speed: about 4 kB of the file per second, 80 s for all of it, so a pause always lands
# mid-print and a resumed print keeps printing while the test looks.
SLOW_MOVES = "M220 S30"
PAUSE_AFTER = 2500  # bytes: past homing and heating, drawing the intro line
UI_TIMEOUT = 30_000  # ms: a loaded machine (the suite runs 4 workers on 2 cores) is slow, a passing test never waits it out
FIRST_VIEW_TIMEOUT = 120_000  # ms

# ------------------------------------------------------------------------------------------ server


def start_server(artifacts: Path):
    """A started sandbox with the fast-heating virtual printer connected and the test file uploaded."""
    octoprint = Path(sys.executable).parent / "octoprint"
    helpers = sorted((Path(__file__).parent / "plugins").glob("*.py"))
    sb = sandbox_module.Sandbox(octoprint=str(octoprint), plugins=helpers, extra_config=FAST_HEAT)
    sb.artifacts = artifacts
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        sb.start()
        sb.connect(profile=PROFILE)
        assert sb.api("POST", "/api/printer/command", {"command": SLOW_MOVES})[0] == 204
        status, reply = sb.upload(CORPUS_GCODE / GCODE_NAME)
        assert status == 201, reply
    except BaseException:
        stop_server(sb)
        raise
    return sb


def stop_server(sb):
    sb.stop()
    for log in (sb.octoprint_log, sb.serial_log, sb.stdout_log):
        if log.exists():
            shutil.copyfile(log, sb.artifacts / log.name)
    sb.cleanup()


@pytest.fixture(scope="module")
def server():
    sb = start_server(REPO / "test-artifacts" / "browser")
    yield sb
    stop_server(sb)




def safepause(sb) -> dict:
    status, body = sb.api("GET", "/api/plugin/safepause")
    assert status == 200, body
    return body


def wait_safepause(sb, state, timeout=20.0) -> dict:
    return wait_for(lambda: (s := safepause(sb))["state"] == state and s, timeout, f"SafePause {state}")


def job(sb) -> dict:
    return sb.api("GET", "/api/job")[1]


def filepos(sb) -> int:
    return job(sb)["progress"]["filepos"] or 0


def start_print(sb, via_page=None):
    """Select the test file and start it (by OctoPrint's own Print button when a page is given)."""
    ensure_idle(sb)
    assert sb.api("POST", f"/api/files/local/{GCODE_NAME}", {"command": "select"})[0] == 204
    if via_page is not None:
        expect(via_page.locator("#job_print")).to_be_enabled(timeout=UI_TIMEOUT)
        via_page.click("#job_print")
    else:
        assert sb.api("POST", "/api/job", {"command": "start"})[0] == 204
    sb.wait_state("Printing", timeout=20)
    wait_for(lambda: filepos(sb) > PAUSE_AFTER, 30, f"file position {PAUSE_AFTER}")


def pause_over_rest(sb, **body):
    status, reply = sb.api("POST", "/api/plugin/safepause", dict({"command": "pause"}, **body))
    assert status == 202, reply
    return wait_safepause(sb, "paused")


def ensure_idle(sb):
    """Whatever a failed test left behind: no pause, no print."""
    if safepause(sb)["state"] in ("pausing", "paused"):
        sb.api("POST", "/api/plugin/safepause", {"command": "cancel"})
        wait_safepause(sb, "idle")
    if sb.state() not in ("Operational",):
        sb.api("POST", "/api/job", {"command": "cancel"})
        sb.wait_state("Operational", timeout=30)


# ------------------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


class Page:
    """A logged-in OctoPrint page; collects JavaScript errors, which fail the test."""

    def __init__(self, browser, sb, user="admin", query=""):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.sb = sb
        password = sandbox_module.USERS[user][1]
        self.page.goto(sb.url + "/" + query)
        self.page.fill("#login-user", user)
        self.page.fill("#login-password", password)
        self.page.click("#login-button")
        # logging in reloads OctoPrint's whole app (44 view models): seconds alone, much longer when
        # the suite's other workers hold both cores
        try:
            self.page.locator("#sidebar_plugin_safepause").wait_for(state="visible", timeout=FIRST_VIEW_TIMEOUT)
        except Exception as timeout:
            self.shot("page-did-not-open")
            raise AssertionError(f"SafePause's sidebar not visible; JavaScript errors: {self.errors}") from timeout
        expect(self.state).not_to_have_text("", timeout=UI_TIMEOUT)

    @property
    def state(self):
        return self.page.locator("[data-test-id=safepause-state]")

    def button(self, name):
        return self.page.locator(f"#safepause_{name}")

    def shot(self, name):
        self.page.screenshot(path=str(self.sb.artifacts / f"{name}.png"), full_page=True)

    def close(self):
        self.context.close()
        assert self.errors == [], f"JavaScript errors: {self.errors}"


@pytest.fixture
def open_page(browser):
    pages = []

    def opener(sb, user="admin", query=""):
        page = Page(browser, sb, user, query)
        pages.append(page)
        return page

    yield opener
    for page in pages:
        page.close()


# ------------------------------------------------------------------------------------------ tests


def test_pause_and_resume_from_the_sidebar(server, open_page):
    ui = open_page(server)
    expect(ui.state).to_have_text("Not printing")
    start_print(server, via_page=ui.page)
    expect(ui.state).to_have_text("Printing", timeout=UI_TIMEOUT)
    expect(ui.button("pause")).to_be_enabled()
    expect(ui.button("resume")).to_be_disabled()
    expect(ui.button("cancel")).to_be_disabled()

    ui.button("pause").click()
    expect(ui.state).to_have_text("Paused", timeout=UI_TIMEOUT)
    state = safepause(server)
    assert state["state"] == "paused" and state["holding"] and state["source"] == "user:admin"
    expect(ui.page.locator("[data-test-id=safepause-since]")).to_have_text(re.compile(r"^since \d\d:\d\d$"))
    expect(ui.page.locator("[data-test-id=safepause-who]")).to_have_text("admin")
    expect(ui.page.locator("[data-test-id=safepause-heaters]")).to_contain_text(
        "the long-pause policy acts in"
    )
    # OctoPrint's own state panel says Paused: SafePause's pause is OctoPrint's pause
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Paused")
    expect(ui.button("pause")).to_be_disabled()
    expect(ui.button("resume")).to_be_enabled()
    expect(ui.button("cancel")).to_be_enabled()
    held_at = filepos(server)
    time.sleep(1.0)  # a hold must really hold: nothing of the file goes out meanwhile
    assert filepos(server) == held_at
    ui.shot("sidebar-paused")

    ui.button("resume").click()
    expect(ui.state).to_have_text("Printing", timeout=UI_TIMEOUT)
    wait_safepause(server, "idle")
    wait_for(lambda: filepos(server) > held_at + 2000, 20, "printing to continue after resume")
    assert server.state() == "Printing"
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Printing")
    ui.shot("sidebar-resumed")
    ensure_idle(server)


def test_filament_change_from_the_sidebar(server, open_page):
    ui = open_page(server)
    start_print(server)
    change = ui.page.locator("#safepause_change")
    expect(change).to_be_enabled(timeout=UI_TIMEOUT)
    change.click()
    step = ui.page.locator("[data-test-id=safepause-change-step]")
    expect(step).to_contain_text("Filament unloaded", timeout=UI_TIMEOUT)
    expect(ui.page.locator(".ui-pnotify", has_text="the printer waits for the new one")).to_be_visible(
        timeout=UI_TIMEOUT
    )
    assert job(server)["state"] == "Paused" and safepause(server)["change"]["step"] == "unloaded"
    purge = ui.page.locator("#safepause_purge")
    expect(purge).to_have_text("Load and purge")
    ui.shot("change-unloaded")

    purge.click()
    expect(step).to_contain_text("Purged 30 mm", timeout=UI_TIMEOUT)
    expect(purge).to_have_text("Purge more")
    purge.click()
    expect(step).to_contain_text("Purged 60 mm", timeout=UI_TIMEOUT)
    ui.shot("change-purged")

    held_at = filepos(server)
    ui.button("resume").click()
    expect(ui.state).to_have_text("Printing", timeout=UI_TIMEOUT)
    expect(step).to_have_count(0)
    wait_for(lambda: filepos(server) > held_at + 1000, 20, "printing after the change")
    ensure_idle(server)


def test_pause_and_cancel_with_confirmation(server, open_page):
    ui = open_page(server)
    start_print(server)
    expect(ui.button("pause")).to_be_enabled(timeout=UI_TIMEOUT)
    ui.button("pause").click()
    expect(ui.state).to_have_text("Paused", timeout=UI_TIMEOUT)

    ui.button("cancel").click()
    dialog = ui.page.locator(".modal", has_text="This will cancel the paused print")
    expect(dialog).to_be_visible()
    ui.shot("cancel-confirmation")
    dialog.locator("a.btn", has_text="No, keep it paused").click()
    expect(dialog).to_be_hidden()
    assert safepause(server)["state"] == "paused"

    ui.button("cancel").click()
    ui.page.locator(".modal", has_text="This will cancel the paused print").locator(
        "a.btn", has_text="Yes, cancel the print"
    ).click()
    expect(ui.page.locator("[data-test-id=state-string]")).to_have_text("Operational", timeout=30_000)
    expect(ui.state).to_have_text("Not printing")
    assert safepause(server)["state"] == "idle"
    assert job(server)["state"] == "Operational"
    ui.shot("cancelled")


def test_user_without_control_sees_the_state_but_no_buttons(server, open_page):
    viewer = open_page(server, user="viewer")
    admin = open_page(server)
    start_print(server)
    expect(viewer.state).to_have_text("Printing", timeout=UI_TIMEOUT)
    expect(viewer.page.locator(".safepause-buttons")).to_be_hidden()
    expect(viewer.page.locator("#safepause_change")).to_be_hidden()
    expect(viewer.page.locator("[data-test-id=safepause-readonly]")).to_be_visible()
    assert server.api("POST", "/api/plugin/safepause", {"command": "pause"}, user="viewer")[0] == 403

    # another plugin pauses: both see it live; the admin, whose browser did not ask for it, gets a pop-up
    status, reply = server.api(
        "POST", "/api/plugin/safepause_detector", {"command": "detect", "reason": "spaghetti"}
    )
    assert status == 200 and reply["result"] is True, reply
    expect(viewer.state).to_have_text("Paused", timeout=UI_TIMEOUT)
    expect(viewer.page.locator("[data-test-id=safepause-who]")).to_have_text("plugin detector")
    expect(viewer.page.locator("[data-test-id=safepause-reason]")).to_have_text("spaghetti")
    expect(viewer.page.locator("#safepause_resume")).to_be_hidden()
    notice = admin.page.locator(".ui-pnotify", has_text="Print paused by SafePause")
    expect(notice).to_be_visible(timeout=UI_TIMEOUT)
    expect(notice).to_contain_text("Paused by plugin detector. Reason: spaghetti")
    viewer.shot("viewer-paused")
    admin.shot("admin-notified")
    ensure_idle(server)


def test_settings_validate_inline_and_preview_the_gcode(server, open_page):
    ui = open_page(server)
    page = ui.page
    page.click("#navbar_show_settings")
    page.click("#settings_plugin_safepause_link a")
    form = page.locator("[data-test-id=safepause-settings]")
    expect(form).to_be_visible()
    preview = page.locator("[data-test-id=safepause-preview-pause]")
    expect(preview).to_contain_text("G1 Z", timeout=UI_TIMEOUT)  # the lift of the sample print
    expect(page.locator("[data-test-id=safepause-preview-resume]")).to_contain_text("G1 Z1.1")  # back down

    page.fill("#safepause_lift", "9999")
    error = page.locator("[data-test-id=safepause-error-lift]")
    expect(error).to_have_text(re.compile(r"Lift: must be at most 500 mm"), timeout=UI_TIMEOUT)
    page.fill("#safepause_retract_speed", "fast")
    expect(page.locator("[data-test-id=safepause-error-retract_speed]")).to_contain_text("must be a number")
    expect(page.locator("[data-test-id=safepause-settings-errors]")).to_be_visible()
    page.fill("#safepause_park_x", "300")
    expect(page.locator("[data-test-id=safepause-error-park_x]")).to_contain_text("outside the bed")
    ui.shot("settings-errors")

    # the preview follows the edits: another retract length shows up in the pause G-code
    page.fill("#safepause_lift", "5")
    page.fill("#safepause_retract_speed", "35")
    page.fill("#safepause_park_x", "")
    page.fill("#safepause_retract_length", "3.5")
    expect(error).to_be_hidden(timeout=UI_TIMEOUT)
    expect(preview).to_contain_text("G1 E-3.5 F2100", timeout=UI_TIMEOUT)
    expect(page.locator("[data-test-id=safepause-settings-errors]")).to_be_hidden()

    # saving a bad value: the server keeps the old one and says so
    page.fill("#safepause_lift", "9999")
    expect(error).to_be_visible(timeout=UI_TIMEOUT)
    page.click("[data-test-id=settings-save]")
    notice = page.locator(".ui-pnotify", has_text="SafePause settings not saved")
    expect(notice).to_be_visible(timeout=UI_TIMEOUT)
    expect(notice).to_contain_text("Lift")
    settings = server.api("GET", "/api/settings")[1]["plugins"]["safepause"]
    assert settings["lift"] == 5.0  # unchanged
    assert settings["retract_length"] == 3.5  # the valid edit was saved, typed
    assert server.api("POST", "/api/settings", {"plugins": {"safepause": {"retract_length": 2.0}}})[0] == 200


def test_german_interface(server, open_page):
    ui = open_page(server, query="?l10n=de")
    expect(ui.state).to_have_text("Druckt nicht")
    expect(ui.page.locator("#sidebar_plugin_safepause_wrapper")).to_contain_text("Fortsetzen")
    ui.page.click("#navbar_show_settings")
    ui.page.click("#settings_plugin_safepause_link a")
    expect(ui.page.locator("[data-test-id=safepause-settings]")).to_contain_text("Anheben")
    expect(ui.page.locator("[data-test-id=safepause-preview]")).to_contain_text(
        "Beispieldruck", timeout=UI_TIMEOUT
    )
    ui.shot("settings-de")
