"""Users' own pause / resume G-code: Jinja2 templates rendered in a sandbox, strictly.

A template sees `state` (the tracker snapshot, `state.as_dict()`), `printer_profile`, `settings` (the
motion settings), `plan` (what the pause did) and `volume`. Undefined names fail instead of rendering as
empty text: a purge line with a silently missing coordinate would move to X0. Every failure is a
TemplateError carrying the template's line number, so the controller can skip or abort that step.

The variables are plain JSON data (see `json_safe`) so that a separate process can render them
(template_runner.py). The environment is hardened, as defence in depth and for clear messages: no
operator, filter, test or method call is evaluated at compile time (Jinja2 folds constant expressions
while compiling, and `{{ 7**(10**8) }}` would then freeze the caller inside `check`), and at run time
every step that could make a value huge is refused with a SecurityError naming it: big powers and
products, repetitions, format widths, padding arguments, joins, `~` and `+` concatenations. The output
is bounded too (MAX_OUTPUT_CHARS while it streams, then MAX_LINES and MAX_LINE_CHARS). What this
cannot bound in-process is time (nested loops doing nothing) and memory held in many values at once (a
macro's own output, a list growing in a namespace): that is the worker process's job (its deadline and
its memory limit), see template_runner.py.

This module is loaded by file location in the worker (template_worker.py): it must not use relative
imports or import anything but the standard library and jinja2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import string
import traceback
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_SOURCE_CHARS = 20000
MAX_LINES = 1000  # a runaway loop must not flood the printer's queue
MAX_LINE_CHARS = 96  # Marlin's MAX_CMD_SIZE; a longer command is cut or refused by the firmware
MAX_OUTPUT_CHARS = 200_000  # the raw text while it streams: MAX_LINES full lines, comments, blanks
MAX_VALUE_CHARS = 100_000  # any string, list or printed value a template makes
MAX_INT_BITS = 1024  # as big as a float gets; beyond that big-int arithmetic only costs time
MAX_WIDTH = 100  # format widths and precisions, padding (center, ljust, zfill, indent, tojson)
MAX_MESSAGE_CHARS = 300
OUT_OF_MEMORY = "out of memory"  # the message of a MemoryError (the worker then starts afresh)

_TEMPLATE_FILENAME = "<template>"  # what Jinja2 names template frames in tracebacks


class TemplateError(Exception):
    """A template that cannot be compiled or rendered; `lineno` is 1-based or None."""

    def __init__(self, message: str, lineno: int | None = None, name: str = "template"):
        self.message = message
        self.lineno = lineno
        self.name = name
        where = f"{name}, line {lineno}" if lineno else name
        super().__init__(f"{where}: {message}")


# ------------------------------------------------------------------------------------------ size checks


def _printed_size(value: Any, budget: int = MAX_VALUE_CHARS) -> int:
    """About len(str(value)) without building it; stops counting once past `budget`.

    Containers count their items (a list of 10,000 references to one long string prints 10,000 times);
    every item counts at least 1, so the walk ends after at most `budget` steps, cycles included.
    """
    total = 0
    pending = [value]
    while pending and total <= budget:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2  # decimal digits, without str() (4300-digit cap)
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= budget:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            if total <= budget:
                pending.extend(item)
        elif isinstance(item, Namespace):
            total += 12
            pending.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif not isinstance(item, jinja2.Undefined):  # str() of an Undefined raises, as it should
            total += 64
    return total


def _refuse(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise SecurityError(f"{what} would be {size} long, at most {limit} is allowed")


def _check_printed(what: str, value: Any) -> None:
    if isinstance(value, str):
        _refuse(what, len(value), MAX_VALUE_CHARS)
    else:
        _refuse(what, _printed_size(value), MAX_VALUE_CHARS)


def _check_result(what: str, value: Any) -> Any:
    """A result that is already made: only its length (cheap); its printed size is checked on output."""
    if isinstance(value, (str, list, tuple, dict, set, frozenset)):
        _refuse(what, len(value), MAX_VALUE_CHARS)
    return value


def _check_width(what: str, value: Any, limit: int = MAX_WIDTH) -> None:
    if isinstance(value, int) and value > limit:
        raise SecurityError(f"{what}: {value} is too big, at most {limit} is allowed")


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1):
        return
    if exponent > MAX_INT_BITS:  # |base| >= 2: at least `exponent` bits (and it may not fit a float)
        raise SecurityError(_short(f"'**': the exponent {exponent} is too big, at most {MAX_INT_BITS}"))
    bits = int(exponent * math.log2(abs(base)))
    if bits > MAX_INT_BITS:
        raise SecurityError(f"'**': the result would have about {bits} bits, at most {MAX_INT_BITS}")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise SecurityError(f"'*': the result would have about {bits} bits, at most {MAX_INT_BITS}")
        return
    sequence, count = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
        _refuse("'*': the repeated string or list", len(sequence) * max(count, 0), MAX_VALUE_CHARS)


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        _refuse("'+': the concatenation", len(left) + len(right), MAX_VALUE_CHARS)


# printf-style: %[(key)][flags][width][.precision][length]type
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def _check_percent_format(template: str, values: Any) -> None:
    """`template % values` stays small: no width or precision above MAX_WIDTH, no `*` width taken
    from the values, and each field at most as big as all the values printed."""
    fields = 0
    for match in _PERCENT_SPEC.finditer(template):
        width, precision, _kind = match.groups()
        if "*" in (width, precision):
            raise SecurityError("'%': a '*' width or precision is not allowed")
        for number in (width, precision):
            if number:
                _check_width("'%' format width or precision", int(number))
        fields += 1
    if fields:
        _refuse("'%': the formatted string", len(template) + fields * (_printed_size(values) + MAX_WIDTH),
                MAX_VALUE_CHARS)  # fmt: skip


def _check_str_format(template: str, args: tuple, kwargs: Mapping) -> None:
    """str.format / format_map: the same limits as _check_percent_format, nested `{}` specs refused."""
    fields = 0
    for _literal, field, spec, _conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if spec and "{" in spec:
            raise SecurityError("format(): a nested '{}' in a format spec is not allowed")
        for number in re.findall(r"\d+", spec or ""):
            _check_width("format() width or precision", int(number))
        fields += 1
    if fields:
        size = len(template) + fields * (_printed_size(args) + _printed_size(kwargs) + MAX_WIDTH)
        _refuse("format(): the formatted string", size, MAX_VALUE_CHARS)


def _check_replace(s: Any, old: Any = "", new: Any = "", *_args: Any, **_kwargs: Any) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        count = s.count(old) if old else len(s) + 1
        _refuse("replace(): the result", len(s) + count * len(new), MAX_VALUE_CHARS)


def _check_join(items: Any, separator: Any = "", *_args: Any, **_kwargs: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = _printed_size(list(items)) + len(items) * _printed_size(separator)
        _refuse("join: the joined string", size, MAX_VALUE_CHARS)


# ---------------------------------------------------------------------------------------------- filters

# Filters with an integer argument that sizes their result: the largest allowed.
_FILTER_INT_LIMITS = {
    "center": MAX_WIDTH, "indent": MAX_WIDTH, "tojson": MAX_WIDTH, "round": MAX_WIDTH,
    "wordwrap": MAX_VALUE_CHARS, "batch": MAX_VALUE_CHARS, "slice": MAX_VALUE_CHARS,
    "truncate": MAX_VALUE_CHARS, "urlize": MAX_VALUE_CHARS,
}  # fmt: skip
# Filters that print their value: its printed size is checked before they do.
_PRINTING_FILTERS = frozenset([
    "string", "pprint", "tojson", "e", "escape", "forceescape", "safe", "upper", "lower", "title",
    "capitalize", "trim", "striptags", "wordcount", "urlencode", "urlize", "center", "indent",
    "wordwrap", "truncate", "replace", "format", "xmlattr",
])  # fmt: skip


def _check_indent(s: Any, width: Any = 4, *_args: Any, **_kwargs: Any) -> None:
    if isinstance(s, str):
        pad = width if isinstance(width, int) else _printed_size(width)
        _refuse("indent: the result", len(s) + (s.count("\n") + 1) * pad, MAX_VALUE_CHARS)


def _check_wordwrap(s: Any, width: Any = 79, _long: Any = True, wrapstring: Any = None, *_a: Any,
                    **kwargs: Any) -> None:  # fmt: skip
    wrapstring = kwargs.get("wrapstring", wrapstring)
    if isinstance(s, str) and isinstance(width, int) and isinstance(wrapstring, str):
        _refuse("wordwrap: the result", len(s) + (len(s) // max(width, 1) + 1) * len(wrapstring),
                MAX_VALUE_CHARS)  # fmt: skip


def _check_sum_filter(
    _iterable: Any, _attribute: Any = None, start: Any = 0, *_a: Any, **kwargs: Any
) -> None:
    if not isinstance(kwargs.get("start", start), (int, float)):
        raise SecurityError("sum: only numbers can be added up")  # lists and strings: quadratic


def _check_format_filter(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_percent_format(str(value), kwargs or args)


_FILTER_CHECKS = {
    "replace": _check_replace,
    "join": _check_join,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "sum": _check_sum_filter,
    "format": _check_format_filter,
}


def _check_filter_call(name: str, value: Any, args: tuple, kwargs: Mapping) -> None:
    limit = _FILTER_INT_LIMITS.get(name)
    if limit is not None:
        for number in [*args, *kwargs.values()]:
            _check_width(f"|{name}", number, limit)
    if name in _PRINTING_FILTERS:
        _check_printed(f"|{name}: its value printed", value)
    check = _FILTER_CHECKS.get(name)
    if check is not None:
        check(value, *args, **kwargs)


def _leading_args(func: Any, context: jinja2.runtime.Context) -> tuple:
    """What Jinja2 passes before the value to a filter or test marked with @pass_context & co."""
    kind = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    if kind == "context":
        return (context,)
    if kind == "eval_context":
        return (context.eval_ctx,)
    if kind == "environment":
        return (context.environment,)
    return ()


def _guarded_filter(name: str, func: Any) -> Any:
    # @pass_context: Jinja2 never evaluates such a filter at compile time (nodes._FilterTestCommon).
    @jinja2.pass_context
    def guarded(context, value, *args, **kwargs):
        if name == "join" and not isinstance(value, (list, tuple)):
            value = list(value)  # a generator (|map), a string, a dict: measured as the list join sees
        _check_filter_call(name, value, args, kwargs)
        return _check_result(
            f"|{name}: the result", func(*_leading_args(func, context), value, *args, **kwargs)
        )

    guarded.__name__ = guarded.__qualname__ = f"guarded_{name}"
    return guarded


def _guarded_test(func: Any) -> Any:
    @jinja2.pass_context  # only so that tests are never evaluated at compile time either
    def guarded(context, value, *args, **kwargs):
        return func(*_leading_args(func, context), value, *args, **kwargs)

    return guarded


# ---------------------------------------------------------------------------------------- method calls

_PADDING_METHODS = frozenset(["ljust", "rjust", "center", "zfill", "expandtabs"])


def _check_method_call(obj: Any, args: tuple, kwargs: Mapping) -> tuple:
    """Refuses a str method call that would make a huge string; returns the (maybe listed) args."""
    wrapped = getattr(obj, "__wrapped__", None)  # the sandbox's wrapper around str.format
    method = wrapped if wrapped is not None else obj
    target, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if not isinstance(target, str):
        return args
    if name == "format":
        _check_str_format(target, args, kwargs)
    elif name == "format_map" and args:
        _check_str_format(target, (), args[0] if isinstance(args[0], Mapping) else {})
    elif name in _PADDING_METHODS:
        for number in [*args, *kwargs.values()]:
            _check_width(f"{name}()", number)
        if name == "expandtabs" and args and isinstance(args[0], int):
            _refuse("expandtabs(): the result", len(target) + target.count("\t") * args[0], MAX_VALUE_CHARS)
    elif name == "replace":
        _check_replace(target, *args, **kwargs)
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(args[0])
        _check_join(items, target)
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_printed_size(v) for v in args[0].values()), default=1)
        _refuse("translate(): the result", len(target) * max(longest, 1), MAX_VALUE_CHARS)
    return args


# -------------------------------------------------------------------------------------------- environment


class _CodeGenerator(CodeGenerator):
    """Compiles `~` to environment.checked_concat: the sandbox cannot intercept it, and doubling a
    string with `~` in a recursive macro or a namespace is the quickest way to exhaust memory."""

    def visit_Concat(self, node, frame):
        # the same choice of join as CodeGenerator.visit_Concat (escaping only inside {% autoescape %})
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write(f"environment.checked_concat({markup}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GcodeEnvironment(ImmutableSandboxedEnvironment):
    # Intercepted operators are never constant-folded in a sandbox (nodes.BinExpr.as_const); binary
    # - only for the size of ints. Unary + and - cannot make a value bigger, so they are left alone.
    intercepted_binops = frozenset(["+", "-", "*", "%", "**"])
    intercepted_unops = frozenset()
    code_generator_class = _CodeGenerator

    def __init__(self, **options: Any):
        super().__init__(finalize=self._finalize_output, **options)
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}
        self.tests = {name: _guarded_test(func) for name, func in self.tests.items()}
        del self.globals["lipsum"]  # lorem ipsum of up to n paragraphs: no use in G-code, a cheap bomb

    @staticmethod
    def _finalize_output(value: Any) -> Any:
        _check_printed("a printed value", value)
        return value

    def call_binop(self, context, operator, left, right):
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left, right)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:  # + and - add a bit at a time
            raise SecurityError(
                f"'{operator}': the result has {result.bit_length()} bits, at most {MAX_INT_BITS}"
            )
        return _check_result(f"'{operator}': the result", result)

    def call(self, context, obj, /, *args, **kwargs):
        args = _check_method_call(obj, args, kwargs)
        return _check_result("a call's result", super().call(context, obj, *args, **kwargs))

    @staticmethod
    def checked_concat(markup: bool, parts: tuple) -> str:
        size = sum(len(part) if isinstance(part, str) else _printed_size(part) for part in parts)
        _refuse("'~': the joined string", size, MAX_VALUE_CHARS)
        return markup_join(parts) if markup else str_join(parts)

    def get_template(self, *args: Any, **kwargs: Any):
        # There is no loader; without this, {% include %} would fail with "no loader for this environment".
        raise SecurityError("a template cannot include, import or extend other templates")

    select_template = get_or_select_template = get_template


_env = _GcodeEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


# ------------------------------------------------------------------------------------------------- API


@functools.lru_cache(maxsize=32)
def _compiled(template_text: str) -> jinja2.Template:
    # Compiling a long template costs up to a second of pure Python; the worker renders the same
    # two templates again and again.
    return _env.from_string(template_text)


def compile_template(template_text: str, name: str = "template") -> jinja2.Template:
    if len(template_text) > MAX_SOURCE_CHARS:
        raise TemplateError(f"longer than {MAX_SOURCE_CHARS} characters", None, name)
    try:
        return _compiled(template_text)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(_short(error.message or str(error)), error.lineno, name) from None
    except RecursionError:
        raise TemplateError("nested too deeply", None, name) from None
    except Exception as error:  # Python's own limits on the generated code, a 4300+ digit number
        raise TemplateError(_short(f"cannot compile: {type(error).__name__}: {error}"), None, name) from None


def check(template_text: str, name: str = "template") -> str | None:
    """The compile error message for a settings form, or None when the template compiles."""
    try:
        compile_template(template_text or "", name)
    except TemplateError as error:
        return str(error)
    return None


def render(template_text: str, context: Mapping[str, Any], name: str = "template") -> list[str]:
    """The G-code lines of a template: stripped, without blank and comment-only lines.

    Raises TemplateError for syntax errors, undefined variables, sandbox violations (values too big
    included), any other exception inside the template, and output beyond MAX_OUTPUT_CHARS, MAX_LINES
    or MAX_LINE_CHARS per line.
    """
    if not template_text or not template_text.strip():
        return []
    template = compile_template(template_text, name)
    return _gcode_lines(_generate(template, context, name), name)


def _generate(template: jinja2.Template, context: Mapping[str, Any], name: str) -> str:
    """The rendered text, stopped as soon as it grows beyond MAX_OUTPUT_CHARS."""
    pieces, size = [], 0
    stream = template.generate(dict(context))
    try:
        for piece in stream:
            if not piece:
                continue  # empty pieces are not output, but keeping them would fill memory
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"renders more than {MAX_OUTPUT_CHARS} characters", None, name)
            pieces.append(piece)
    except TemplateError:
        raise
    except Exception as error:
        raise _as_template_error(error, name) from None
    finally:
        stream.close()
    return "".join(pieces)


def _gcode_lines(text: str, name: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        lines.append(line)
        if len(lines) > MAX_LINES:
            raise TemplateError(f"renders more than {MAX_LINES} lines", None, name)
        if len(line) > MAX_LINE_CHARS:  # the whole line, comment included, like safety.py
            raise TemplateError(
                f"G-code line {len(lines)} of the output is {len(line)} characters long, at most "
                f"{MAX_LINE_CHARS}: {line[:40]}...",
                None,
                name,
            )
    return lines


def _as_template_error(error: Exception, name: str) -> TemplateError:
    lineno = _template_line(error)
    if isinstance(error, jinja2.TemplateSyntaxError):  # from an {% include %} or similar, compiled late
        return TemplateError(_short(error.message or str(error)), error.lineno, name)
    if isinstance(error, jinja2.UndefinedError):
        return TemplateError(_short(f"undefined variable: {error.message}"), lineno, name)
    if isinstance(error, SecurityError):
        return TemplateError(_short(f"not allowed: {error}"), lineno, name)
    if isinstance(error, RecursionError):
        return TemplateError("recursion too deep (a macro that calls itself without end?)", lineno, name)
    if isinstance(error, MemoryError):
        return TemplateError(OUT_OF_MEMORY, lineno, name)
    return TemplateError(_short(f"{type(error).__name__}: {error}"), lineno, name)


def _short(message: str) -> str:
    # Messages can quote the template's values (a KeyError on a 100,000-character key).
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _template_line(error: BaseException) -> int | None:
    # Jinja2 rewrites tracebacks so that template code shows up as frames of the template's filename.
    lineno = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == _TEMPLATE_FILENAME:
            lineno = frame.lineno
    return lineno


# ---------------------------------------------------------------------------------------------- context


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def json_safe(value: Any) -> Any:
    """`value` as JSON data, so that the worker process sees what an in-process render sees.

    Objects with as_dict() and dataclasses become dicts; tuples and sets become lists (sets sorted
    when they can be); mapping keys become strings (`fans[0]` must be written `fans['0']`, as the
    state's own dicts already are); str, int, float (NaN and infinities too: Python's json reads
    them back), bool and None stay; anything else becomes its str().
    """
    value = _plain(value)
    if isinstance(value, Mapping):
        return {key if isinstance(key, str) else str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (set, frozenset)):
        try:
            value = sorted(value)
        except TypeError:
            value = list(value)
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def build_context(state, profile, settings, plan=None, volume=None, **extra) -> dict:
    """The variables a template sees: plain JSON data (json_safe), so templates only read data."""
    context = {
        "state": state if state is not None else {},
        "printer_profile": dict(profile or {}),
        "settings": settings if settings is not None else {},
        "plan": plan if plan is not None else {},
        "volume": volume if volume is not None else {},
    }
    context.update(extra)
    return json_safe(context)
