"""The "Resume a file from a height..." dialog of the SafePause sidebar in a real browser (headless Debian
chromium, Playwright) against a real `octoprint serve` with the virtual printer.

Proves: the button shows for a user who may control prints while the printer is idle; the dialog lists
the local files of OctoPrint's file list, shows the chosen file's layers as the server counts them
(GET's `from_height`), the preview of a layer (the prelude as GET builds it for that Z, the line the
file continues with, the height of the part so far) and the server's refusals; Confirm starts the file
with the prelude first and then the file's own lines from that layer's position. German texts. A user
without control does not see the button. Screenshots and the server's logs go to
test-artifacts/height-browser/.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from playwright.sync_api import expect  # noqa: E402

from tests.e2e.conftest import SafePauseServer  # noqa: E402
from tests.e2e.test_browser import (  # noqa: E402, F401  (browser, open_page: fixtures)
    CORPUS_GCODE,
    GCODE_NAME,
    REPO,
    UI_TIMEOUT,
    browser,
    ensure_idle,
    open_page,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REFUSED = "G28"  # homes Z over the part: the server's safety check refuses it (400, named)
FOLLOWING = 20  # file lines checked after the prelude


@pytest.fixture(scope="module")
def server():
    sb = start_server(REPO / "test-artifacts" / "height-browser")
    yield sb
    stop_server(sb)


@pytest.fixture(scope="module")
def serial(server):
    """conftest's reader of what went out, over this server and the uploaded file's lines."""
    return SafePauseServer(server, CORPUS_GCODE / GCODE_NAME)


def from_height(sb, **query) -> dict:
    """GET's `from_height` for the test file, asked again while the server analyses it."""

    def ask():
        path = "/api/plugin/safepause?path=" + GCODE_NAME + "".join(f"&{k}={v}" for k, v in query.items())
        status, body = sb.api("GET", path)
        assert status == 200, (status, body)
        answer = body["from_height"]
        return answer if answer["status"] == "ready" else None

    return wait_for(ask, 30, "the file's analysis")


def js_number(value) -> str:
    """A number as JavaScript's String() writes it (the dialog's texts)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def js_percent(progress) -> str:
    """(progress * 100).toFixed(1): the exact double rounded, ties up."""
    return str(Decimal(progress * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def layer_text(number, layer) -> str:
    return f"Layer {number}: Z {js_number(layer['z'])} mm ({js_percent(layer['progress'])}%)"


def commands_since(serial, mark) -> list:
    """The numbered commands written since a serial.log offset, without OctoPrint's line number resets and
    its temperature polls (which may come between any two lines)."""
    return [cmd for _, cmd in serial.sends(mark) if not cmd.startswith(("M110", "M105"))]


def test_resume_a_file_from_a_height(server, serial, open_page):  # noqa: F811
    ensure_idle(server)
    ui = open_page(server)
    page = ui.page
    button = page.locator("#safepause_height")
    expect(button).to_be_visible(timeout=UI_TIMEOUT)
    expect(button).to_be_enabled()
    answer = from_height(server)
    layers = answer["layers"]
    assert len(layers) >= 3, layers

    button.click()
    dialog = page.locator("#safepause_height_dialog")
    expect(dialog).to_be_visible(timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-height-homed]")).to_contain_text("must be homed")
    confirm = dialog.locator("[data-test-id=safepause-height-confirm]")
    expect(confirm).to_be_disabled()  # nothing chosen yet
    dialog.locator("[data-test-id=safepause-height-file]").select_option(GCODE_NAME, timeout=UI_TIMEOUT)

    # the layers, as the server counts them: number, Z, how far into the file
    select = dialog.locator("[data-test-id=safepause-height-layer]")
    expected = [layer_text(i + 1, layer) for i, layer in enumerate(layers)]
    expect(select.locator("option")).to_have_text(["Choose a layer...", *expected], timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-height-layers-summary]")).to_have_text(
        f"{len(layers)} layers, the last at Z {js_number(layers[-1]['z'])} mm"
    )
    ui.shot("height-layers")

    # one in the middle: its preview is GET's for that Z
    index = len(layers) // 2
    layer = layers[index]
    preview = from_height(server, z=layer["z"], position_kept="true")
    assert preview["prelude"] and preview["pos"] == layer["pos"], preview
    select.select_option(label=expected[index])
    prelude = dialog.locator("[data-test-id=safepause-height-prelude]")
    expect(prelude).to_have_value("\n".join(preview["prelude"]), timeout=UI_TIMEOUT)
    expect(dialog.locator("[data-test-id=safepause-height-layer-info]")).to_have_text(
        f"Z {js_number(preview['layer_z'])} mm, byte {preview['pos']} of {preview['size']} "
        f"({js_percent(preview['progress'])}%)"
    )
    expect(dialog.locator("[data-test-id=safepause-height-part]")).to_have_text(
        f"the part up to Z {js_number(preview['max_z'])} mm"
    )
    expect(dialog.locator("[data-test-id=safepause-height-line]")).to_have_text(preview["line"])
    expect(dialog.locator("[data-test-id=safepause-height-warnings] li")).to_have_count(
        len(preview["warnings"])
    )
    expect(dialog.locator("[data-test-id=safepause-height-prelude-error]")).to_be_hidden()
    expect(confirm).to_be_enabled()
    ui.shot("height-preview")

    # the server's refusal is shown, and nothing starts
    prelude.fill("\n".join([*preview["prelude"], REFUSED]))
    confirm.click()
    error = dialog.locator("[data-test-id=safepause-height-error]")
    expect(error).to_be_visible(timeout=UI_TIMEOUT)
    expect(error).to_contain_text(REFUSED)
    assert server.state() == "Operational"
    ui.shot("height-refused")

    # the built prelude, confirmed: it goes out first, then the file from that layer's first line
    prelude.fill("\n".join(preview["prelude"]))
    mark = serial.serial_mark()
    confirm.click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT)
    server.wait_state("Printing", timeout=20)
    expect(page.locator("[data-test-id=state-string]")).to_have_text("Printing", timeout=UI_TIMEOUT)
    expect(button).to_be_hidden(timeout=UI_TIMEOUT)  # no second start while this one prints

    first = serial.held_line_index(layer["pos"])  # the first file line at or after the layer's position
    file_lines = [line for line, _ in serial.lines[first : first + FOLLOWING]]
    assert file_lines[0] == preview["line"].split(";")[0].strip()  # OctoPrint sends it without comment
    want = len(preview["prelude"]) + FOLLOWING
    sent = wait_for(
        lambda: (cmds := commands_since(serial, mark)) and len(cmds) >= want and cmds, 30, "the file's lines"
    )
    assert sent[: len(preview["prelude"])] == preview["prelude"], sent[:40]
    assert sent[len(preview["prelude"]) : want] == file_lines, sent[:want]
    ui.shot("height-printing")
    ensure_idle(server)


def test_german_texts(server, open_page):  # noqa: F811
    """The template's texts and the view model's (gettext in JavaScript) both come translated."""
    ensure_idle(server)
    ui = open_page(server, query="?l10n=de")
    button = ui.page.locator("#safepause_height")
    expect(button).to_have_text("Eine Datei ab einer Höhe fortsetzen...", timeout=UI_TIMEOUT)
    button.click()
    dialog = ui.page.locator("#safepause_height_dialog")
    expect(dialog.locator("[data-test-id=safepause-height-file] option").first).to_have_text(
        "Lokale Datei wählen...", timeout=UI_TIMEOUT
    )
    ui.shot("height-dialog-de")


def test_user_without_control_has_no_button(server, open_page):  # noqa: F811
    ensure_idle(server)
    admin = open_page(server)
    viewer = open_page(server, user="viewer")
    expect(admin.page.locator("#safepause_height")).to_be_visible(timeout=UI_TIMEOUT)  # the page is ready
    expect(viewer.page.locator("[data-test-id=safepause-readonly]")).to_be_visible(timeout=UI_TIMEOUT)
    expect(viewer.page.locator("#safepause_height")).to_be_hidden()
    viewer.shot("height-viewer")
    z = from_height(server)["layers"][1]["z"]
    body = {"command": "recover", "path": GCODE_NAME, "z": z}
    status, body = server.api("POST", "/api/plugin/safepause", body, user="viewer")
    assert status == 403, body
    assert server.state() == "Operational"
