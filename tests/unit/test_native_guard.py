"""OctoPrint's own Pause / Resume / Cancel during a SafePause pause: the pure decision table, and the
text the settings page translates."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from octoprint_safepause.adapter.native_guard import CANCEL, PAUSE, RESUME, Decision, decide, describe, who
from octoprint_safepause.core import settings_schema
from octoprint_safepause.core.gcode import FLAVOURS

REPO = Path(__file__).resolve().parents[2]


def state(name, **extra):
    return dict({"state": name, "since": 1764090000.0, "reason": None, "source": None}, **extra)


def clock(_epoch):
    return "14:03"


def job(command, action=None):
    body = {"command": command}
    if action is not None:
        body["action"] = action
    return body


# ------------------------------------------------------------------ what passes through untouched


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/job", None),
        ("POST", "/api/printer/command", {"command": "cancel"}),
        ("POST", "/api/plugin/safepause", {"command": "cancel"}),
        ("POST", "/api/jobs", {"command": "cancel"}),
        ("POST", "/api/job", None),  # not JSON: OctoPrint answers 400
        ("POST", "/api/job", ["cancel"]),
        ("POST", "/api/job", {"command": "start"}),
        ("POST", "/api/job", {"command": "restart"}),
        ("POST", "/api/job", {"command": "pause", "action": "sideways"}),
    ],
)
def test_other_requests_are_not_looked_at(method, path, body):
    def must_not_be_called():
        raise AssertionError("the state must only be read for a /api/job pause or cancel")

    assert decide(method, path, body, must_not_be_called) is None


@pytest.mark.parametrize("command", [job("cancel"), job("pause", "resume")])
def test_idle_leaves_octoprint_alone(command):
    assert decide("POST", "/api/job", command, state("idle"), printer_state="printing") is None


@pytest.mark.parametrize("command", [job("pause", "pause"), job("pause")])
def test_idle_pause_is_a_safepause_pause_by_default(command):
    assert decide("POST", "/api/job", command, state("idle"), printer_state="printing") == Decision(PAUSE, 204)
    assert decide("POST", "/api/job", command, state("idle"), take_over_pause=False, printer_state="printing") is None


# ------------------------------------------------------------------ during a SafePause pause


@pytest.mark.parametrize("current", ["pausing", "paused"])
def test_cancel_during_a_pause_goes_through_safepause(current):
    assert decide("POST", "/api/job", job("cancel"), state(current)) == Decision(CANCEL, 204)
    assert decide("POST", "/api/job/", job("cancel"), state(current)) == Decision(CANCEL, 204)


@pytest.mark.parametrize("current", ["resuming", "cancelling"])
def test_cancel_while_resuming_or_cancelling_is_octoprints(current):
    # the hold is about to end; OctoPrint's own cancel then works as usual
    assert decide("POST", "/api/job", job("cancel"), state(current)) is None


@pytest.mark.parametrize("action", ["resume", "toggle", None])
def test_resume_or_toggle_while_paused_resumes_safepause(action):
    assert decide("POST", "/api/job", job("pause", action), state("paused")) == Decision(RESUME, 204)


@pytest.mark.parametrize("current", ["pausing", "paused"])
def test_pause_while_paused_succeeds_doing_nothing(current):
    # as OctoPrint's own pause of a paused print: a farm manager's repeated pause is not an error
    decision = decide("POST", "/api/job", job("pause", "pause"), state(current, source="user:ann"), clock=clock)
    assert decision == Decision(None, 204)


@pytest.mark.parametrize("action", ["resume", "toggle"])
def test_resume_while_still_parking_is_refused(action):
    decision = decide("POST", "/api/job", job("pause", action), state("pausing"))
    assert decision.status == 409 and decision.action is None
    assert "still parking" in decision.message


@pytest.mark.parametrize("current", ["resuming", "cancelling"])
@pytest.mark.parametrize("action", ["pause", "resume", "toggle"])
def test_pause_commands_while_resuming_or_cancelling_are_refused(current, action):
    decision = decide("POST", "/api/job", job("pause", action), state(current))
    assert decision == Decision(None, 409, f"SafePause is {current} the print; try again in a moment")


# ------------------------------------------------------------------ take over OctoPrint's Pause


@pytest.mark.parametrize("action", ["pause", "toggle"])
def test_take_over_pause_makes_octoprints_pause_a_safepause(action):
    decision = decide(
        "POST", "/api/job", job("pause", action), state("idle"), take_over_pause=True, printer_state="printing"
    )
    assert decision == Decision(PAUSE, 204)


@pytest.mark.parametrize("printer_state", ["paused", "pausing", "operational", None])
def test_take_over_only_while_printing(printer_state):
    # natively paused: "toggle" means OctoPrint's resume, which is OctoPrint's business
    assert (
        decide(
            "POST", "/api/job", job("pause"), state("idle"), take_over_pause=True, printer_state=printer_state
        )
        is None
    )


def test_take_over_leaves_resume_and_cancel_alone():
    for body in (job("pause", "resume"), job("cancel")):
        assert decide("POST", "/api/job", body, state("idle"), take_over_pause=True, printer_state="printing") is None


def test_state_callable_is_used():
    assert decide("POST", "/api/job", job("cancel"), lambda: state("paused")) == Decision(CANCEL, 204)


# ------------------------------------------------------------------ the texts


@pytest.mark.parametrize(
    "source, expected",
    [(None, None), ("", None), ("user:ann", "ann"), ("plugin:detector", "plugin detector"), ("api", "api")],
)
def test_who(source, expected):
    assert who(source) == expected


def test_describe_without_details():
    assert describe({"state": "paused"}, clock) == ""
    assert describe({"state": "paused", "since": 5.0, "reason": "blob"}, clock) == "since 14:03 (blob)"


def _n_marked(path: Path) -> set:
    """The literal arguments of N_() calls in a module (what babel extracts from it)."""
    tree = ast.parse(path.read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "N_"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def test_every_settings_label_and_help_is_marked_for_translation():
    # The settings page shows settings_schema.SCHEMA's texts through _(field.label): they must be in
    # the catalog, i.e. N_()-marked in settings_page.py, word for word.
    marked = _n_marked(REPO / "octoprint_safepause" / "core" / "settings_page.py")
    texts = {t for f in settings_schema.SCHEMA for t in (f.label, f.help) if t}
    assert texts - marked == set()


def test_every_settings_field_is_on_the_settings_page():
    from octoprint_safepause.core.settings_page import SETTINGS_GROUPS

    shown = [name for _title, names in SETTINGS_GROUPS for name in names]
    assert sorted(shown) == sorted(f.name for f in settings_schema.SCHEMA)
    assert len(shown) == len(set(shown))


# ------------------------------------------------------------------ the settings page's G-code preview


class _Settings:
    def __init__(self, values):
        self.values = values

    def get(self, path):
        return self.values.get(path[0])


class _Profiles:
    def get_current_or_default(self):
        return {"id": "small", "name": "Small", "volume": {"width": 120, "depth": 120, "height": 60}}


@pytest.fixture
def plugin():
    from octoprint_safepause import SETTINGS_DEFAULTS, SafePausePlugin
    from octoprint_safepause.adapter.octoprint_port import OctoPrintPort

    instance = SafePausePlugin()
    instance._settings = _Settings(dict(SETTINGS_DEFAULTS))
    instance.port = OctoPrintPort(None, None, _Profiles())  # no print: only the profile is read
    return instance


@pytest.mark.parametrize("firmware", ("auto", *FLAVOURS))
def test_preview_of_a_sample_print_for_every_firmware(plugin, firmware):
    preview = plugin.preview({"firmware": firmware, "retract_length": "3.5"})
    assert preview["source"] == "sample" and preview["profile"] == "Small"
    assert preview["flavour"] == ("marlin" if firmware == "auto" else firmware)
    assert preview["pause"] and preview["resume"] and preview["warnings"] == []
    if firmware == "klipper":
        assert preview["pause"][0] == "SAVE_GCODE_STATE NAME=SAFEPAUSE"
    assert any(line.startswith("G1 E-3.5 ") for line in preview["pause"])
    # the park position stays on the 120 x 120 bed, the lift under its 60 mm
    assert "G1 X10 Y110 F6000" in preview["pause"]


def test_preview_renders_the_users_templates_and_reports_their_errors(plugin):
    preview = plugin.preview({"pause_template": "M117 paused at {{ state.z }}", "resume_template": "{{ nope }}"})
    assert preview["pause"][-1] == "M117 paused at 1.1"
    assert preview["warnings"] == [] and list(preview["errors"]) == ["resume_template"]
    assert "undefined variable" in preview["errors"]["resume_template"]


def test_preview_refuses_template_lines_the_safety_check_refuses(plugin):
    """Outside the volume, XY travel below the print, a coordinate shift, a host command, a line that
    is too long: named by setting and line, and left out of the G-code shown."""
    bad = {
        "G1 X9999 F6000": "outside the build volume",
        "G1 Z-20 F600": "outside the build volume",
        "G1 X9999 Y-500 Z-20 F6000": "below the top of the print",
        "G1 Z0.2\nG1 X20 Y20": "below the top of the print",
        "G92 X0 Y0": "coordinate frame",
        "@pause": "host commands",
        "M117 {{ 'x' * 200 }}": "at most 96",
        "G28": "homes Z onto the print",
    }
    for template, why in bad.items():
        preview = plugin.preview({"pause_template": template, "resume_template": template})
        for key in ("pause_template", "resume_template"):
            assert why in preview["errors"][key], (template, preview["errors"])
            assert "line 1" in preview["errors"][key] or "line 2" in preview["errors"][key]
        assert "G1 X9999 Y-500 Z-20 F6000" not in preview["pause"] + preview["resume"]
    fine = plugin.preview({"pause_template": "M117 paused\nG1 X60 Y60 F3000", "resume_template": "M300 S440 P200"})
    assert fine["errors"] == {} and fine["pause"][-2:] == ["M117 paused", "G1 X60 Y60 F3000"]
    assert "M300 S440 P200" in fine["resume"]


def test_preview_uses_the_live_pause_when_there_is_one(plugin):
    from octoprint_safepause.core.gcode import StateTracker

    tracker = StateTracker("marlin")
    for line in ("G90", "M82", "M104 S200", "G28", "G1 Z0.4 F600", "G1 X50 Y50 E1 F1200"):
        tracker.feed(line)

    class Printer:
        def get_current_temperatures(self):
            return {"tool0": {"actual": 200.0, "target": 200.0}}

    plugin.controller.current_pause = lambda: (tracker.state, SimpleNamespace(flavour="marlin"))
    from octoprint_safepause.adapter.octoprint_port import OctoPrintPort

    plugin.port = OctoPrintPort(Printer(), None, _Profiles())
    preview = plugin.preview({})
    assert preview["source"] == "pause" and preview["position"] == {"x": 50.0, "y": 50.0, "z": 0.4}
    assert "G92 E1" in preview["resume"]  # absolute E: the logical E comes back
