"""Users' pause / resume templates: sandboxed, strict, and every failure with its line number."""

from __future__ import annotations

import pytest

from octoprint_safepause.gcode import StateTracker
from octoprint_safepause.sequences import MotionSettings, Volume, pause_sequence
from octoprint_safepause.templates_gcode import MAX_LINES, TemplateError, build_context, check, render

PROFILE = {"volume": {"width": 200, "depth": 200, "height": 180}, "extruder": {"count": 1}}


def context():
    tracker = StateTracker("marlin")
    for line in ["G28", "G90", "M83", "M104 S215", "G92 E0", "G1 Z0.3 X20 Y30 F600", "G1 X40 E1 F1200"]:
        tracker.feed(line)
    state = tracker.state
    volume = Volume.from_profile(PROFILE)
    settings = MotionSettings(park="auto")
    plan = pause_sequence(state, volume, settings)
    return build_context(state, PROFILE, settings, plan, volume)


def test_good_template_renders_stripped_lines():
    text = """
; wipe at the park position
{% if plan.park_xy %}
G1 X{{ plan.park_xy[0] + 5 }} Y{{ plan.park_xy[1] }} F{{ settings.travel_speed * 60 }}
{% endif %}
   M117 paused at Z{{ "%.2f"|format(state.z) }} on {{ printer_profile.volume.width }} mm  ; note
M104 S{{ state.tool_temps['0'] - 20 }}
"""
    assert render(text, context()) == [
        "G1 X15.0 Y190.0 F6000.0",
        "M117 paused at Z0.30 on 200 mm  ; note",
        "M104 S195.0",
    ]
    assert render("", context()) == [] and render("  \n", context()) == []


def test_syntax_error_reports_its_line():
    with pytest.raises(TemplateError) as raised:
        render("G1 X1\nG1 Y1\n{% for x in %}\n", context(), name="resume template")
    assert raised.value.lineno == 3
    assert str(raised.value).startswith("resume template, line 3: ")
    assert check("{{ oops", "Pause G-code").startswith("Pause G-code, line 1: ")
    assert check("G1 X{{ state.x }}") is None


def test_undefined_variable_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateError) as raised:
        render("G1 X1\nG1 X{{ park_x }}\n", context())
    assert raised.value.lineno == 2
    assert "undefined variable: 'park_x' is undefined" in str(raised.value)
    with pytest.raises(TemplateError) as raised:
        render("\n\nG1 Z{{ state.nope }}", context())
    assert raised.value.lineno == 3


def test_sandbox_and_runtime_errors():
    with pytest.raises(TemplateError, match="not allowed"):
        render("{{ state.__class__.__mro__ }}", context())
    with pytest.raises(TemplateError, match="line 2: ZeroDivisionError"):
        render("G1\n{{ 1 / 0 }}", context())
    with pytest.raises(TemplateError, match=f"more than {MAX_LINES} lines"):
        render("{% for i in range(5000) %}G4 P1\n{% endfor %}", context())
    with pytest.raises(TemplateError, match="longer than"):
        render("G4\n" * 10000, context())


def test_context_is_plain_data():
    ctx = context()
    assert set(ctx) == {"state", "printer_profile", "settings", "plan", "volume"}
    assert isinstance(ctx["state"], dict) and ctx["state"]["flavour"] == "marlin"
    assert ctx["plan"]["lines"][0] == "G90" and ctx["volume"]["z_max"] == 180
    assert build_context(None, None, None, extra=1)["extra"] == 1
