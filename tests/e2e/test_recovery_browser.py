"""Recovering a print from the SafePause sidebar in a real browser (headless Debian chromium, Playwright)
against a real `octoprint serve` whose virtual printer dropped the connection mid-print.

Proves: the sidebar learns of the recoverable print by itself (no reload: the Disconnected event and the
recovery_available plugin message), shows file, position and progress, layer Z, when and why, and the
warnings; the Recover dialog offers both choices, refreshes the prelude from the server when a choice
changes, and sends the (edited) prelude; the print starts; Discard asks first. Screenshots and the
server's logs go to test-artifacts/recovery-browser/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect  # noqa: E402

from tests.e2e.test_browser import (  # noqa: E402, F401  (browser, open_page: fixtures)
    GCODE_NAME,
    PROFILE,
    REPO,
    UI_TIMEOUT,
    browser,
    ensure_idle,
    filepos,
    open_page,
    start_print,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

EDIT = "M117 recovered from the browser"  # a harmless line the user adds to the prelude


@pytest.fixture(scope="module")
def server():
    sb = start_server(REPO / "test-artifacts" / "recovery-browser")
    yield sb
    stop_server(sb)


def recovery(sb, **query) -> dict | None:
    path = "/api/plugin/safepause"
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    status, body = sb.api("GET", path)
    assert status == 200, (status, body)
    return body["recovery"]


def fail_mid_print(sb):
    """Print, drop the serial connection, reconnect: a recoverable print."""
    ensure_idle(sb)
    if recovery(sb) is not None:
        assert sb.api("POST", "/api/plugin/safepause", {"command": "discard"})[0] == 200
    start_print(sb)
    status, body = sb.api("POST", "/api/printer/command", {"commands": ["!!DEBUG:drop_connection"]})
    assert status == 204, body
    sb.wait_state("Offline", "Error", "Closed", timeout=20)
    sb.connect(profile=PROFILE)
    return wait_for(lambda: (r := recovery(sb)) and r["status"] == "ready" and r, 30, "the recovery")


def test_recover_from_the_sidebar(server, open_page):  # noqa: F811
    ui = open_page(server)
    page = ui.page
    panel = page.locator("[data-test-id=safepause-recovery]")
    expect(panel).to_be_hidden()

    rec = fail_mid_print(server)
    expect(panel).to_be_visible(timeout=UI_TIMEOUT)
    expect(page.locator("[data-test-id=safepause-recovery-file]")).to_have_text(GCODE_NAME)
    percent = f"{rec['progress'] * 100:.1f}%"
    expect(page.locator("[data-test-id=safepause-recovery-position]")).to_have_text(
        f"byte {rec['pos']} of {rec['size']} ({percent})"
    )
    expect(page.locator("[data-test-id=safepause-recovery-layer]")).to_have_text(f"Z {rec['layer_z']} mm")
    expect(page.locator("[data-test-id=safepause-recovery-date]")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    )
    expect(page.locator("[data-test-id=safepause-recovery-why]")).to_contain_text("connection to the printer")
    warnings = page.locator("[data-test-id=safepause-recovery-warnings] li")
    expect(warnings).to_have_count(len(rec["warnings"]))
    expect(page.locator("#safepause_recover")).to_be_enabled(timeout=UI_TIMEOUT)
    expect(page.locator("#safepause_discard")).to_be_enabled()
    ui.shot("recovery-sidebar")

    page.locator("#safepause_recover").click()
    dialog = page.locator("#safepause_recovery_dialog")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT)
    prelude = dialog.locator("[data-test-id=safepause-rec-prelude]")
    expect(dialog.locator("[data-test-id=safepause-rec-power-on]")).to_be_checked()
    expect(dialog.locator("[data-test-id=safepause-rec-lost]")).to_be_checked()
    expect(dialog.locator("[data-test-id=safepause-rec-position]")).to_be_checked()
    expect(prelude).to_have_value("\n".join(rec["prelude"]), timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-rec-warnings] li")).to_have_count(len(rec["warnings"]))
    ui.shot("recovery-dialog-lost")

    # each choice asks the server for its prelude
    kept = recovery(server, position_kept="true")
    assert kept["prelude"] != rec["prelude"]
    dialog.locator("[data-test-id=safepause-rec-kept]").check()
    expect(prelude).to_have_value("\n".join(kept["prelude"]), timeout=UI_TIMEOUT)
    layer = recovery(server, position_kept="true", start="layer")
    dialog.locator("[data-test-id=safepause-rec-layer]").check()
    expect(prelude).to_have_value("\n".join(layer["prelude"]), timeout=UI_TIMEOUT)
    if layer["line"]:
        expect(dialog.locator("[data-test-id=safepause-rec-line]")).to_have_text(layer["line"])
    ui.shot("recovery-dialog-kept-layer")
    power = recovery(server, power_lost="true", position_kept="true", start="layer")
    dialog.locator("[data-test-id=safepause-rec-power-lost]").check()
    expect(prelude).to_have_value("\n".join(power["prelude"]), timeout=UI_TIMEOUT)
    dialog.locator("[data-test-id=safepause-rec-power-on]").check()
    expect(prelude).to_have_value("\n".join(layer["prelude"]), timeout=UI_TIMEOUT)

    # back to the defaults, one line added by hand, confirmed
    dialog.locator("[data-test-id=safepause-rec-lost]").check()
    dialog.locator("[data-test-id=safepause-rec-position]").check()
    expect(prelude).to_have_value("\n".join(rec["prelude"]), timeout=UI_TIMEOUT)
    prelude.fill("\n".join([*rec["prelude"], EDIT]))
    mark = server.serial_log.stat().st_size
    dialog.locator("[data-test-id=safepause-rec-confirm]").click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT)
    server.wait_state("Printing", timeout=20)
    expect(panel).to_be_hidden(timeout=UI_TIMEOUT)
    expect(page.locator("[data-test-id=state-string]")).to_have_text("Printing", timeout=UI_TIMEOUT)
    wait_for(lambda: filepos(server) > rec["start"], 20, "the recovered print to go on")

    # what went out: the edited prelude, then the file from the recorded position
    sent = _sent_since(server, mark)
    assert sent[: len(rec["prelude"]) + 1] == [*rec["prelude"], EDIT], sent[:40]
    assert recovery(server) is None
    ui.shot("recovery-printing")
    ensure_idle(server)


def test_discard_asks_first(server, open_page):  # noqa: F811
    ui = open_page(server)
    page = ui.page
    fail_mid_print(server)
    panel = page.locator("[data-test-id=safepause-recovery]")
    expect(panel).to_be_visible(timeout=UI_TIMEOUT)

    page.locator("#safepause_discard").click()
    confirm = page.locator(".modal", has_text="it can no longer be recovered")
    expect(confirm).to_be_visible()
    confirm.locator("a.btn", has_text="No, keep it").click()
    expect(confirm).to_be_hidden()
    assert recovery(server) is not None
    expect(panel).to_be_visible()

    page.locator("#safepause_discard").click()
    page.locator(".modal", has_text="it can no longer be recovered").locator(
        "a.btn", has_text="Yes, discard it"
    ).click()
    expect(panel).to_be_hidden(timeout=UI_TIMEOUT)
    assert recovery(server) is None
    ui.shot("recovery-discarded")


def test_viewer_sees_the_recovery_but_no_buttons(server, open_page):  # noqa: F811
    fail_mid_print(server)
    viewer = open_page(server, user="viewer")
    panel = viewer.page.locator("[data-test-id=safepause-recovery]")
    expect(panel).to_be_visible(timeout=UI_TIMEOUT)
    expect(viewer.page.locator("#safepause_recover")).to_be_hidden()
    expect(viewer.page.locator("#safepause_discard")).to_be_hidden()
    viewer.shot("recovery-viewer")
    assert server.api("POST", "/api/plugin/safepause", {"command": "discard"})[0] == 200


def _sent_since(sb, mark: int) -> list:
    """Commands written to the printer after a serial.log byte offset, without line numbers/checksums
    and without OctoPrint's M110 line number resets."""
    with open(sb.serial_log, "rb") as log:
        log.seek(mark)
        text = log.read().decode(errors="replace")
    sent = []
    for raw in text.splitlines():
        match = re.match(r"^\S+ \S+ - Send: (?:N\d+ (.*)\*\d+|(.*))$", raw)
        if not match or match.group(1) is None:
            continue  # received lines, unnumbered lines (M155 and the like)
        cmd = match.group(1).strip()
        if not cmd.startswith("M110"):
            sent.append(cmd)
    return sent


def test_touch_off_from_the_dialog(server, open_page):  # noqa: F811
    """After a power loss: start a touch-off, lower the nozzle in steps shown as they go, continue with
    the next layer from the dialog."""
    ui = open_page(server)
    page = ui.page
    fail_mid_print(server)
    expect(page.locator("#safepause_recover")).to_be_enabled(timeout=UI_TIMEOUT)
    page.locator("#safepause_recover").click()
    dialog = page.locator("#safepause_recovery_dialog")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT)
    touch = dialog.locator("[data-test-id=safepause-touch-off]")
    expect(touch).to_be_hidden()  # only after a power loss
    dialog.locator("[data-test-id=safepause-rec-power-lost]").check()
    expect(touch).to_be_visible(timeout=UI_TIMEOUT)
    mark = server.serial_log.stat().st_size
    touch.locator("[data-test-id=safepause-touch-start]").click()
    z_text = touch.locator("[data-test-id=safepause-touch-z]")
    expect(z_text).to_have_text(re.compile(r"^Z \d+\.\d\d mm$"), timeout=UI_TIMEOUT)
    started = recovery(server, power_lost="true")["touch_off"]
    expect(z_text).to_have_text(f"Z {started['z']:.2f} mm")
    ui.shot("recovery-touch-off")
    for _ in range(3):
        before = recovery(server)["touch_off"]["z"]
        touch.locator("[data-test-id='safepause-touch-jog--0.1']").click()
        wait_for(lambda b=before: recovery(server)["touch_off"]["z"] == pytest.approx(b - 0.1), 10, "the jog")
    expect(z_text).to_have_text(f"Z {started['z'] - 0.3:.2f} mm", timeout=UI_TIMEOUT)
    touch.locator("[data-test-id=safepause-touch-confirm]").click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT)
    server.wait_state("Printing", "Finishing", "Operational", timeout=30)
    with open(server.serial_log, "rb") as log:
        log.seek(mark)
        text = log.read().decode(errors="replace")
    # outside a print the touch-off goes out without line numbers
    sent = [(m.group(1) or m.group(2)).strip() for m in re.finditer(r"Send: (?:N\d+ (.*)\*\d+|(.*))$", text, re.M)]
    assert "G28 X Y" in sent and sent.count("G1 Z-0.1 F600") == 3, sent[:40]
    assert recovery(server) is None
    ensure_idle(server)
