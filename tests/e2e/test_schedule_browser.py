"""Scheduled stops (docs/scheduled-stops.md) in a real browser (headless Debian chromium, Playwright) against a
real `octoprint serve` with the virtual printer printing a real slicer file.

Proves: OctoPrint's file list has a "Pause at height..." button on the local file, whose dialog lists the
file's layers as the server counts them (GET ?schedule=) and adds a pause with a message at a chosen layer;
the stop is kept on the server (listed again after a reload) and removed from the dialog. A file's stop
applies to its print: listed in the sidebar with its layer while the print runs, the pop-up with its
message when it is reached, SafePause paused exactly at that layer's first deposit, resumed from the
sidebar, the file keeping its stop. On a running print the sidebar's form shows the server's refusal (a
layer already printed), adds G-code lines at a layer and a pause at the next layer, and removes them, after
which the print goes past that layer without a pause. A user without control sees neither the file button nor the section. Screenshots and the
server's logs go to test-artifacts/schedule-browser/.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import expect  # noqa: E402

from tests.e2e.test_browser import (  # noqa: E402, F401  (browser, open_page: fixtures)
    GCODE_NAME,
    PAUSE_AFTER,
    REPO,
    UI_TIMEOUT,
    browser,
    ensure_idle,
    filepos,
    open_page,
    pause_over_rest,
    safepause,
    start_server,
    stop_server,
    wait_for,
    wait_safepause,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# ms: what waits on the virtual printer printing (~4 kB of the file a second, slower when loaded)
PRINT_TIMEOUT = 90_000
FILE_STOP_AT = 40_000  # bytes: the file stop's layer is the first one from here, ~10 s into the print


@pytest.fixture(scope="module")
def server():
    sb = start_server(REPO / "test-artifacts" / "schedule-browser")
    yield sb
    stop_server(sb)


@pytest.fixture
def clean(server):
    """No print, no pause, no stop on the file, before and after the test."""
    ensure_idle(server)
    remove_file_stops(server)
    yield server
    ensure_idle(server)
    remove_file_stops(server)


# ------------------------------------------------------------------------------------------ server


def file_schedule(sb) -> dict:
    """GET's `schedule` for the test file, asked again while the server analyses it."""

    def ask():
        status, body = sb.api("GET", "/api/plugin/safepause?schedule=" + GCODE_NAME)
        assert status == 200, (status, body)
        answer = body["schedule"]
        return answer if answer["status"] == "ready" else None

    return wait_for(ask, 60, "the file's analysis")


def remove_file_stops(sb):
    for stop in file_schedule(sb)["stops"]:
        body = {"command": "unschedule", "id": stop["id"], "path": GCODE_NAME}
        status, reply = sb.api("POST", "/api/plugin/safepause", body)
        assert status == 200, reply


def start_print(sb):
    assert sb.api("POST", f"/api/files/local/{GCODE_NAME}", {"command": "select", "print": True})[0] == 204
    sb.wait_state("Printing", timeout=20)


def js_number(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def layer_option(layer) -> str:
    """The dialog's text for a layer: number, Z as JavaScript writes it, progress to one decimal."""
    return f"Layer {layer['layer']}: Z {js_number(layer['z'])} mm ({layer['progress'] * 100:.1f}%)"


def where(stop) -> str:
    return f"layer {stop['layer']} (Z {stop['z']:.2f})"


# ------------------------------------------------------------------------------------------ page


# the test file's entry in OctoPrint's file list (files.js getEntryId)
ENTRY = "#gcode_file_" + hashlib.md5(f"local:{GCODE_NAME}".encode()).hexdigest()


def file_button(page):
    """The "Pause at height..." button of the test file's entry in OctoPrint's file list."""
    return page.locator(f"{ENTRY} [data-test-id=safepause-schedule-file]")


def open_dialog(page):
    button = file_button(page)
    expect(button).to_be_visible(timeout=UI_TIMEOUT)
    expect(button).to_have_attribute("title", "Pause at height...")
    button.click()
    dialog = page.locator("#safepause_schedule_dialog")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-schedule-file-name]")).to_have_text(GCODE_NAME)
    return dialog


def stop_item(container, stop_id):
    return container.locator(f"[data-test-id=safepause-stop][data-stop-id='{stop_id}']")


def add_file_stop(sb, page, layer, message):
    """Through the dialog: a pause with a message before `layer`; the new stop as the server keeps it."""
    dialog = open_dialog(page)
    select = dialog.locator("[data-test-id=safepause-schedule-layer]")
    expect(select).to_be_visible(timeout=UI_TIMEOUT)  # the layers are there
    select.select_option(label=layer_option(layer))
    expect(dialog.locator("[data-test-id=safepause-schedule-action]")).to_have_value("pause")
    dialog.locator("[data-test-id=safepause-schedule-message]").fill(message)
    dialog.locator("[data-test-id=safepause-schedule-add]").click()
    stops = dialog.locator("[data-test-id=safepause-schedule-stops] [data-test-id=safepause-stop]")
    expect(stops).to_have_count(1, timeout=UI_TIMEOUT)
    (stop,) = file_schedule(sb)["stops"]
    assert stop["at"] == {"layer": layer["layer"]} and stop["action"] == "pause", stop
    assert stop["message"] == message and stop["scope"] == "file", stop
    assert stop["layer"] == layer["layer"] and stop["filepos"] == layer["pos"], (stop, layer)
    item = stop_item(dialog, stop["id"])
    expect(item.locator("[data-test-id=safepause-stop-action]")).to_have_text("Pause")
    expect(item.locator("[data-test-id=safepause-stop-where]")).to_have_text(where(stop))
    expect(item.locator("[data-test-id=safepause-stop-message]")).to_have_text(message)
    # the form is cleared for the next one
    expect(dialog.locator("[data-test-id=safepause-schedule-message]")).to_have_value("")
    expect(dialog.locator("[data-test-id=safepause-schedule-error]")).to_be_hidden()
    return dialog, stop


def close_dialog(dialog):
    dialog.locator("[data-test-id=safepause-schedule-close]").click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT)


# ------------------------------------------------------------------------------------------ tests


def test_a_file_stop_from_the_file_list(clean, open_page):  # noqa: F811
    server = clean
    schedule = file_schedule(server)
    layers = schedule["layers"]
    assert len(layers) > 100 and schedule["stops"] == [], schedule["stops"]
    ui = open_page(server)
    page = ui.page

    dialog = open_dialog(page)
    select = dialog.locator("[data-test-id=safepause-schedule-layer]")
    expected = [layer_option(layer) for layer in layers]
    expect(select.locator("option")).to_have_text(["Choose a layer...", *expected], timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-schedule-no-stops]")).to_be_visible()
    expect(dialog.locator("[data-test-id=safepause-schedule-add]")).to_be_disabled()  # no layer yet
    # the admin has OctoPrint's CONTROL: G-code is offered, and asks for its lines
    action = dialog.locator("[data-test-id=safepause-schedule-action]")
    expect(action.locator("option")).to_have_text(["Pause", "Filament change", "G-code"])
    action.select_option("gcode")
    expect(dialog.locator("[data-test-id=safepause-schedule-gcode]")).to_be_visible()
    action.select_option("pause")
    expect(dialog.locator("[data-test-id=safepause-schedule-gcode]")).to_have_count(0)
    ui.shot("schedule-dialog")
    close_dialog(dialog)

    layer = layers[len(layers) // 2]
    dialog, stop = add_file_stop(server, page, layer, "insert magnets")
    ui.shot("schedule-dialog-added")
    close_dialog(dialog)

    # kept on the server: a fresh page lists it
    page.reload()
    page.locator("#sidebar_plugin_safepause").wait_for(state="visible", timeout=UI_TIMEOUT)
    dialog = open_dialog(page)
    item = stop_item(dialog, stop["id"])
    expect(item.locator("[data-test-id=safepause-stop-where]")).to_have_text(where(stop), timeout=UI_TIMEOUT)
    expect(item.locator("[data-test-id=safepause-stop-message]")).to_have_text("insert magnets")

    item.locator("[data-test-id=safepause-stop-remove]").click()
    expect(dialog.locator("[data-test-id=safepause-schedule-no-stops]")).to_be_visible(timeout=UI_TIMEOUT)
    listed = dialog.locator("[data-test-id=safepause-schedule-stops] [data-test-id=safepause-stop]")
    expect(listed).to_have_count(0)
    assert file_schedule(server)["stops"] == []
    ui.shot("schedule-dialog-removed")
    close_dialog(dialog)


def test_a_file_stop_pauses_its_print(clean, open_page):  # noqa: F811
    server = clean
    layers = file_schedule(server)["layers"]
    layer = next(la for la in layers if la["pos"] >= FILE_STOP_AT)
    ui = open_page(server)
    page = ui.page
    message = f"look at layer {layer['layer']}"
    dialog, stop = add_file_stop(server, page, layer, message)
    close_dialog(dialog)

    start_print(server)
    # the sidebar lists it with its layer and how far away it is, before it is reached
    section = page.locator("[data-test-id=safepause-stops]")
    expect(section).to_be_visible(timeout=UI_TIMEOUT)
    item = stop_item(section, stop["id"])
    expect(item.locator("[data-test-id=safepause-stop-action]")).to_have_text("Pause", timeout=UI_TIMEOUT)
    expect(item.locator("[data-test-id=safepause-stop-where]")).to_have_text(where(stop))
    expect(item.locator("[data-test-id=safepause-stop-distance]")).to_contain_text(" layer")
    expect(item.locator("[data-test-id=safepause-stop-message]")).to_have_text(message)
    expect(item.locator("[data-test-id=safepause-stop-scope]")).to_have_text("kept with the file")
    remove = item.locator("[data-test-id=safepause-stop-remove]")
    expect(remove).to_have_attribute("title", "Remove this stop, from the file too")
    ui.shot("schedule-sidebar-file-stop")

    # reached: the pop-up with the message, SafePause paused before the layer's first deposit
    title = page.locator(".ui-pnotify-title", has_text=re.compile(r"^\s*Scheduled stop\s*$"))
    notice = page.locator(".ui-pnotify", has=title).filter(has_text=message)
    expect(notice).to_be_visible(timeout=PRINT_TIMEOUT)
    expect(notice).to_contain_text(f"Scheduled pause at layer {layer['layer']} reached")
    expect(ui.state).to_have_text("Paused", timeout=UI_TIMEOUT)
    expect(page.locator("[data-test-id=safepause-who]")).to_have_text("a scheduled stop")
    expect(page.locator("[data-test-id=safepause-reason]")).to_have_text(message)
    status = wait_safepause(server, "paused")
    assert status["filepos"] == layer["pos"], (status["filepos"], layer)
    assert status["stops"] == [], status["stops"]  # fired: nothing ahead any more
    expect(section.locator("[data-test-id=safepause-stop]")).to_have_count(0, timeout=UI_TIMEOUT)
    expect(section.locator("[data-test-id=safepause-stops-none]")).to_be_visible()
    ui.shot("schedule-reached")

    resume = ui.button("resume")
    expect(resume).to_be_enabled(timeout=UI_TIMEOUT)
    resume.click()
    wait_safepause(server, "idle", timeout=30)
    server.wait_state("Printing", timeout=30)
    wait_for(lambda: filepos(server) > layer["pos"], 30, "the print going on after the stop")
    # the file keeps its stop for the next print
    assert [s["id"] for s in file_schedule(server)["stops"]] == [stop["id"]]


def test_next_layer_from_the_sidebar(clean, open_page):  # noqa: F811
    server = clean
    ui = open_page(server)
    page = ui.page
    section = page.locator("[data-test-id=safepause-stops]")
    expect(section).to_be_hidden()  # nothing printing
    start_print(server)
    wait_for(lambda: filepos(server) > PAUSE_AFTER, 30, f"file position {PAUSE_AFTER}")
    # held by SafePause, the print keeps its place while the form is used (a layer lasts half a second)
    pause_over_rest(server)
    expect(section).to_be_visible(timeout=UI_TIMEOUT)
    expect(section.locator("[data-test-id=safepause-stops-none]")).to_be_visible()

    page.locator("[data-test-id=safepause-stop-add-open]").click()
    form = page.locator("[data-test-id=safepause-stop-form]")
    expect(form).to_be_visible()
    kind = form.locator("[data-test-id=safepause-stop-kind]")
    expect(kind.locator("option")).to_have_text(
        ["At height (mm)", "At layer", "At the next layer", "Every N layers"]
    )
    value = form.locator("[data-test-id=safepause-stop-value]")

    # the first layer, which the print has started: the server's refusal next to the form, nothing added
    kind.select_option("layer")
    value.fill("1")
    form.locator("[data-test-id=safepause-stop-add]").click()
    error = form.locator("[data-test-id=safepause-stop-error]")
    expect(error).to_contain_text("layer 1", timeout=UI_TIMEOUT)
    expect(error).to_contain_text("started already")
    assert safepause(server)["stops"] == []
    ui.shot("schedule-sidebar-refused")

    # G-code lines (the admin has OctoPrint's CONTROL), one per line, blank lines dropped
    value.fill("120")
    form.locator("[data-test-id=safepause-stop-action-select]").select_option("gcode")
    form.locator("[data-test-id=safepause-stop-gcode-input]").fill("M117 one\n\n  M117 two\n")
    form.locator("[data-test-id=safepause-stop-add]").click()
    expect(form).to_be_hidden(timeout=UI_TIMEOUT)
    (stop,) = safepause(server)["stops"]
    assert stop["at"] == {"layer": 120} and stop["action"] == "gcode", stop
    assert stop["gcode"] == ["M117 one", "M117 two"], stop
    item = stop_item(section, stop["id"])
    expect(item.locator("[data-test-id=safepause-stop-action]")).to_have_text("G-code", timeout=UI_TIMEOUT)
    expect(item.locator("[data-test-id=safepause-stop-gcode]")).to_have_text("M117 one / M117 two")
    item.locator("[data-test-id=safepause-stop-remove]").click()
    expect(item).to_have_count(0, timeout=UI_TIMEOUT)
    assert safepause(server)["stops"] == []

    page.locator("[data-test-id=safepause-stop-add-open]").click()
    # cleared: a pause again, no G-code lines
    expect(form.locator("[data-test-id=safepause-stop-gcode-input]")).to_have_count(0)
    kind.select_option("next_layer")
    expect(value).to_be_hidden()
    expect(error).to_be_hidden()
    form.locator("[data-test-id=safepause-stop-action-select]").select_option("pause")
    form.locator("[data-test-id=safepause-stop-message-input]").fill("next one")
    form.locator("[data-test-id=safepause-stop-add]").click()
    expect(form).to_be_hidden(timeout=UI_TIMEOUT)  # added: the form is cleared and closed
    (stop,) = safepause(server)["stops"]
    assert stop["at"] == {"next_layer": True} and stop["scope"] == "print", stop
    item = stop_item(section, stop["id"])
    expect(item.locator("[data-test-id=safepause-stop-where]")).to_have_text(where(stop), timeout=UI_TIMEOUT)
    expect(item.locator("[data-test-id=safepause-stop-message]")).to_have_text("next one")
    expect(item.locator("[data-test-id=safepause-stop-distance]")).to_contain_text("in 1 layer")
    expect(item.locator("[data-test-id=safepause-stop-scope]")).to_be_hidden()
    page.locator("[data-test-id=safepause-stop-add-open]").click()
    expect(form.locator("[data-test-id=safepause-stop-message-input]")).to_have_value("")
    expect(kind).to_have_value("z")
    ui.shot("schedule-sidebar-next-layer")
    page.locator("[data-test-id=safepause-stop-add-cancel]").click()

    item.locator("[data-test-id=safepause-stop-remove]").click()
    expect(section.locator("[data-test-id=safepause-stop]")).to_have_count(0, timeout=UI_TIMEOUT)
    expect(section.locator("[data-test-id=safepause-stops-none]")).to_be_visible()
    assert safepause(server)["stops"] == []

    # removed for good: the print goes past that layer without stopping
    ui.button("resume").click()
    wait_safepause(server, "idle", timeout=30)
    past = stop["filepos"] + 4000

    def past_the_layer():
        state = safepause(server)["state"]
        assert state == "idle", f"SafePause {state} after the stop was removed"
        return filepos(server) > past

    wait_for(past_the_layer, 30, f"file position {past}", interval=0.2)


def test_user_without_control_sees_no_schedule(clean, open_page):  # noqa: F811
    server = clean
    admin = open_page(server)
    viewer = open_page(server, user="viewer")
    expect(file_button(admin.page)).to_be_visible(timeout=UI_TIMEOUT)
    expect(viewer.page.locator("[data-test-id=safepause-readonly]")).to_be_visible(timeout=UI_TIMEOUT)
    expect(viewer.page.locator(ENTRY)).to_be_visible()  # the viewer sees the file, not the button
    expect(file_button(viewer.page)).to_be_hidden()
    start_print(server)
    expect(admin.page.locator("[data-test-id=safepause-stops]")).to_be_visible(timeout=UI_TIMEOUT)
    expect(viewer.page.locator("[data-test-id=safepause-stops]")).to_be_hidden()
    viewer.shot("schedule-viewer")
    body = {"command": "schedule", "at": {"layer": 50}, "path": GCODE_NAME}
    status, reply = server.api("POST", "/api/plugin/safepause", body, user="viewer")
    assert status == 403, reply
    assert file_schedule(server)["stops"] == []
