"""Users' own pause / resume G-code: Jinja2 templates rendered in a sandbox, strictly.

A template sees `state` (the tracker snapshot, `state.as_dict()`), `printer_profile`, `settings` (the
motion settings), `plan` (what the pause did) and `volume`. Undefined names fail instead of rendering as
empty text: a purge line with a silently missing coordinate would move to X0. Every failure is a
TemplateError carrying the template's line number, so the controller can skip or abort that step.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SOURCE_CHARS = 20000
MAX_LINES = 1000  # a runaway loop must not flood the printer's queue

_TEMPLATE_FILENAME = "<template>"  # what Jinja2 names template frames in tracebacks

_env = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


class TemplateError(Exception):
    """A template that cannot be compiled or rendered; `lineno` is 1-based or None."""

    def __init__(self, message: str, lineno: int | None = None, name: str = "template"):
        self.message = message
        self.lineno = lineno
        self.name = name
        where = f"{name}, line {lineno}" if lineno else name
        super().__init__(f"{where}: {message}")


def compile_template(template_text: str, name: str = "template") -> jinja2.Template:
    if len(template_text) > MAX_SOURCE_CHARS:
        raise TemplateError(f"longer than {MAX_SOURCE_CHARS} characters", None, name)
    try:
        return _env.from_string(template_text)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(error.message or str(error), error.lineno, name) from None


def check(template_text: str, name: str = "template") -> str | None:
    """The compile error message for a settings form, or None when the template compiles."""
    try:
        compile_template(template_text or "", name)
    except TemplateError as error:
        return str(error)
    return None


def render(template_text: str, context: Mapping[str, Any], name: str = "template") -> list[str]:
    """The G-code lines of a template: stripped, without blank and comment-only lines.

    Raises TemplateError for syntax errors, undefined variables, sandbox violations and any other
    exception inside the template.
    """
    if not template_text or not template_text.strip():
        return []
    template = compile_template(template_text, name)
    try:
        text = template.render(dict(context))
    except jinja2.TemplateSyntaxError as error:  # from an {% include %} or similar, compiled late
        raise TemplateError(error.message or str(error), error.lineno, name) from None
    except jinja2.UndefinedError as error:
        raise TemplateError(f"undefined variable: {error.message}", _template_line(error), name) from None
    except jinja2.exceptions.SecurityError as error:
        raise TemplateError(f"not allowed: {error}", _template_line(error), name) from None
    except Exception as error:
        raise TemplateError(f"{type(error).__name__}: {error}", _template_line(error), name) from None
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        lines.append(line)
        if len(lines) > MAX_LINES:
            raise TemplateError(f"renders more than {MAX_LINES} lines", None, name)
    return lines


def _template_line(error: BaseException) -> int | None:
    # Jinja2 rewrites tracebacks so that template code shows up as frames of the template's filename.
    lineno = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == _TEMPLATE_FILENAME:
            lineno = frame.lineno
    return lineno


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def build_context(state, profile, settings, plan=None, volume=None, **extra) -> dict:
    """The variables a template sees; objects become plain dicts so templates only read data."""
    context = {
        "state": _plain(state) if state is not None else {},
        "printer_profile": dict(profile or {}),
        "settings": _plain(settings) if settings is not None else {},
        "plan": _plain(plan) if plan is not None else {},
        "volume": _plain(volume) if volume is not None else {},
    }
    context.update(extra)
    return context
