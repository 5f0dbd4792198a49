"""Users' pause / resume templates: sandboxed, strict, and every failure with its line number."""

from __future__ import annotations

import json
import math
import time

import pytest

from octoprint_safepause.core.gcode import StateTracker
from octoprint_safepause.core.sequences import MotionSettings, Volume, pause_sequence
from octoprint_safepause.core.templates_gcode import (
    MAX_LINES,
    MAX_OUTPUT_CHARS,
    TemplateError,
    build_context,
    check,
    render,
)

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


# ----------------------------------------------------------------------- hardening (in-process, cheap)

# Jinja2 folds constant expressions while compiling: before the hardening these froze `check` itself.
FOLDING_BOMBS = {
    "{{ 7**(10**8) }}": "'**': the exponent 100000000 is too big",
    "{{ 7**(10**7) }}": "'**': the exponent 10000000 is too big",
    "{{ 7**500 }}": "'**': the result would have about 1403 bits, at most 1024",
    "{{ 'x'|center(1000000000) }}": "|center: 1000000000 is too big",
    "M117 {{ 'x'*200000 }}": "'*': the repeated string or list would be 200000 long",
    "{{ '%0999999999d' % 1 }}": "'%' format width or precision: 999999999 is too big",
    "{{ '%.999999f' % 1 }}": "'%' format width or precision: 999999 is too big",
    "{{ '%*d' % (10**9, 1) }}": "a '*' width or precision is not allowed",
    "{{ '%0999999999d'|format(1) }}": "'%' format width or precision",
    "{{ '{:09999999}'.format(1) }}": "format() width or precision: 9999999 is too big",
    "{{ '{:{}}'.format(1, 10**9) }}": "nested '{}' in a format spec",
    "{{ 'x'.ljust(10**9) }}": "ljust(): 1000000000 is too big",
    "{{ 'x'.center(10**9) }}": "center(): 1000000000 is too big",
    "{{ '7'.zfill(10**9) }}": "zfill(): 1000000000 is too big",
    "{{ range(10)|batch(10**9, 'x')|list }}": "|batch: 1000000000 is too big",
    "{{ 'x x'|wordwrap(10**9) }}": "|wordwrap: 1000000000 is too big",
    "{{ ['x']|map('center', 10**9)|list }}": "|center: 1000000000 is too big",
    "{{ (2**1000) * (2**1000) }}": "'*': the result would have about 2002 bits",
}

# Amplifiers that build a huge value from small pieces, refused before they build it.
BUILDING_BOMBS = {
    "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s }}{% endmacro %}{{ d('x', 60) }}": "'~': the joined string",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}": "'~'",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}": "'+'",
    "{% set l = ['x' * 99999] * 99999 %}{{ l }}": "a printed value",
    "{% set l = ['x' * 99999] * 99999 %}{{ l|join }}": "join: the joined string",
    "{% set l = ['x' * 99999] * 99999 %}{{ ''.join(l) }}": "join: the joined string",
    "{% set l = ['x' * 99999] * 99999 %}{{ l|string }}": "|string: its value printed",
    "{% set l = ['x' * 99999] * 99999 %}{{ 'a' ~ l }}": "'~'",
    "{% set l = ['x' * 99999] * 99999 %}{{ '%s' % (l,) }}": "'%': the formatted string",
    "{{ ('x' * 99999)|replace('', 'y' * 99) }}": "replace(): the result",
    "{{ ('x' * 99999).replace('x', 'yy') }}": "replace(): the result",
    "{{ ('\\n' * 99999)|indent('y' * 99) }}": "indent: the result",
    "{{ [[1] * 99999] * 99999|sum(start=[]) }}": "sum: only numbers",
    "{% set ns = namespace(n=3) %}{% for i in range(2000) %}{% set ns.n = ns.n + ns.n %}{% endfor %}": "'+': the result has 1025 bits",
    "{% set ns = namespace(n=3) %}{% for i in range(2000) %}{% set ns.n = ns.n - (0 - ns.n) %}{% endfor %}": "'-'",
    "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}": "recursion too deep",
}


@pytest.mark.parametrize("text", [*FOLDING_BOMBS, *BUILDING_BOMBS])
def test_bombs_compile_in_milliseconds(text):
    started = time.perf_counter()
    assert check(text) is None
    assert time.perf_counter() - started < 0.5  # a few ms; generous for a loaded CI machine


@pytest.mark.parametrize("text, message", [*FOLDING_BOMBS.items(), *BUILDING_BOMBS.items()])
def test_bombs_are_refused_saying_what(text, message):
    started = time.perf_counter()
    with pytest.raises(TemplateError) as raised:
        render(text, context())
    assert time.perf_counter() - started < 1.0
    assert message in raised.value.message
    assert raised.value.lineno == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("{{ 1" + "1" * 5000 + " }}", "cannot compile: ValueError: Exceeds the limit (4300 digits)"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
        (
            "{% for x in y %}" * 30 + "{% endfor %}" * 30,
            "cannot compile: SyntaxError: too many statically nested",
        ),
    ],
)
def test_what_python_cannot_compile_is_a_template_error(text, message):
    started = time.perf_counter()
    assert message in check(text)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("tag", ["{% include 'x' %}", "{% import 'x' as y %}", "{% from 'x' import y %}",
                                 "{% extends 'x' %}"])  # fmt: skip
def test_no_other_templates(tag):
    with pytest.raises(TemplateError, match="not allowed: a template cannot include, import or extend"):
        render(tag, context())


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ state.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ ''|attr('__class__') }}",
        "{{ ''['__class__'] }}",
        "{{ ''.format.__globals__ }}",
        "{{ '{0.__class__}'.format('') }}",
        "{{ range.__self__ }}",
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns.__class__ }}",
    ],
)
def test_sandbox_escapes_fail(text):
    with pytest.raises(TemplateError, match="not allowed|undefined variable"):
        render(text, context())


def test_lipsum_is_gone():
    with pytest.raises(TemplateError, match="'lipsum' is undefined"):
        render("{{ lipsum(10**5) }}", context())


def test_output_line_length_is_bounded_and_named():
    line = "G1 X" + "1" * 92  # 96 characters
    assert render(f"G4\n{line}\n", context()) == ["G4", line]
    with pytest.raises(TemplateError, match="G-code line 1 of the output is 98 characters long"):
        render(f"{line} ;", context())  # comments count: safety.py measures the whole line too
    with pytest.raises(TemplateError) as raised:
        render("G4\n; comment\n\nM117 {{ 'x' * 92 }}\n", context(), name="pause_template")
    assert raised.value.message.startswith("G-code line 2 of the output is 97 characters long, at most 96")
    assert str(raised.value).startswith("pause_template: ")


def test_output_lines_and_size_are_bounded():
    assert len(render("{% for i in range(1000) %}G4 P{{ i }}\n{% endfor %}", context())) == MAX_LINES
    with pytest.raises(TemplateError, match="renders more than 1000 lines"):
        render("{% for i in range(1001) %}G4 P{{ i }}\n{% endfor %}", context())
    # comment and blank lines are not sent but still bounded, and the stream stops early
    started = time.perf_counter()
    with pytest.raises(TemplateError, match=f"renders more than {MAX_OUTPUT_CHARS} characters"):
        render("{% for i in range(99999) %}{% for j in range(99999) %};{{ ' ' * 50 }}\n{% endfor %}{% endfor %}",
               context())  # fmt: skip
    assert time.perf_counter() - started < 1.0


def test_hardened_environment_still_renders_ordinary_jinja():
    text = """
{% set ns = namespace(total=0) %}
{% for i in range(3) %}{% set ns.total = ns.total + i %}{% endfor %}
M117 {{ ns.total }} {{ [1, 2, 3]|map('string')|join(',') }} {{ [1, -2, 3]|select('odd')|list }}
M117 {{ '%05.1f'|format(3.14159) }} {{ '%s %s' % (1, 2) }} {{ '{:.1f}|{:>4}'.format(1.25, 'a') }}
M117 {{ 2**10 }} {{ 2**-1 }} {{ 10*3 }} {{ 'ab'*2 }} {{ 7 % 3 }} {{ 'a' ~ 1 ~ none }} {{ 'x'.ljust(3) }}|
M117 {{ 'ab'|center(6) }}| {{ 'a b c'|wordwrap(3)|replace('\n', '/') }} {{ [1, 2, 3]|batch(2)|list }}
M117 {{ {'a': [1, 2]}|tojson }} {{ state.macros|length }} {{ 1.23456|round(2) }} {{ x|default(12000) }}
{% macro m(a) %}<{{ a }}{{ caller() }}>{% endmacro %}
M117 {% call m(2) %}in{% endcall %} {{ 3 is divisibleby 3 }} {{ 'a-b'.replace('-', '+') }}
"""
    assert render(text, context()) == [
        "M117 3 1,2,3 [1, 3]",
        "M117 003.1 1 2 1.2|   a",
        "M117 1024 0.5 30 abab 1 a1None x  |",
        "M117   ab  | a b/c [[1, 2], [3]]",
        'M117 {"a": [1, 2]} 0 1.23 12000',
        "M117 <2in> True a+b",
    ]


def test_context_survives_json():
    ctx = context()
    assert json.loads(json.dumps(ctx)) == ctx
    ctx = build_context(None, {"extruder": {"offsets": [(0.0, 0.0)]}}, None, fans={0: 1.0}, nan=math.nan)
    assert ctx["printer_profile"]["extruder"]["offsets"] == [[0.0, 0.0]] and ctx["fans"] == {"0": 1.0}
    assert math.isnan(json.loads(json.dumps(ctx))["nan"])
    assert render("G1 X{{ plan.park_xy[0] }}", context()) == ["G1 X10.0"]
