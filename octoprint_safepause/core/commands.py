"""Every command SafePause takes, declared once: its parameters and their validation, the permission it
needs, its help text and its answers. REST (`POST /api/plugin/safepause`), the helpers for other
plugins and OctoPrint's own Pause / Resume / Cancel buttons (native_guard) all go through `run`, so a
new command is one entry here and one function. No Flask here: `run` returns (HTTP status, body).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from . import settings_schema
from .controller import Refused
from .recovery.service import RecoveryRefused
from .schedule import StopRefused
from .scheduler import Analysing

# Who may run a command. CONTROL: OctoPrint's PRINT or the plugin's own "Safe pause control";
# SETTINGS: OctoPrint's SETTINGS. G-code the user typed also needs OctoPrint's own CONTROL (`own_gcode`).
CONTROL, SETTINGS = "control", "settings"
MAX_TEXT = 200


@dataclass(frozen=True)
class Command:
    name: str
    action: str  # what it does, for refusals: "you are not allowed to <action>"
    permission: str
    params: tuple[str, ...]
    help: str
    answers: Mapping[int, str]
    handler: Callable[[Any, dict, str | None], tuple[int, dict]] = field(repr=False, default=None)
    own_gcode: tuple[str, ...] = ()  # parameters that carry the user's own G-code
    strict: bool = False  # unknown parameters are refused (400)


def clean_text(data: dict, key: str):
    """A short optional string parameter, trimmed; ValueError with a clear message otherwise."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise ValueError(f"'{key}' is longer than {MAX_TEXT} characters")
    return value or None


# ----------------------------------------------------------------------------------------- handlers
# Each takes the plugin's `Actions` (controller, recovery, settings check), the parameters and the
# default source ("user:<name>", "api", or None for another plugin) and returns (status, body).


def _pausing(start: str):
    """A handler for a pause of some kind: `start` names the controller's method (pause, change_filament)."""

    def handler(actions, data, source):
        reason = clean_text(data, "reason")
        source = clean_text(data, "source") or source
        getattr(actions.controller, start)(reason=reason, source=source)
        return 202, {"state": actions.controller.get_state()}

    return handler


MAX_PURGE = settings_schema.FIELDS["change_purge_length"].maximum  # mm


def _purge(actions, data, source):
    length = data.get("length")
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, float)) or not math.isfinite(length):
            raise ValueError("'length' must be a number (mm)")
        if not 0 < length <= MAX_PURGE:
            raise ValueError(f"'length' must be more than 0 and at most {MAX_PURGE:g} mm")
        length = float(length)
    actions.controller.purge(length)
    return 202, {"state": actions.controller.get_state()}


def _resume(actions, data, source):
    actions.controller.resume(source)
    return 202, {"state": actions.controller.get_state()}


def _cancel(actions, data, source):
    actions.controller.cancel()
    return 202, {"state": actions.controller.get_state()}


def _schedule(actions, data, source):
    body = actions.scheduler.schedule(data)
    return 200, dict(body, state=actions.controller.get_state())


def _unschedule(actions, data, source):
    body = actions.scheduler.unschedule(data.get("id"), data.get("path"))
    return 200, dict(body, state=actions.controller.get_state())


def _recover(actions, data, source):
    if actions.recovery is None:
        return 409, {"error": "recovery is not available"}
    keys = ("position_kept", "power_lost", "start", "prelude", "path", "z")
    choices = {key: data[key] for key in keys if key in data}
    for key in ("position_kept", "power_lost"):
        if key in choices and not isinstance(choices[key], bool):
            return 400, {"error": f"{key} must be true or false"}
    return 202, {"recovery": actions.recovery.recover(**choices)}


def _touch_off(actions, data, source):
    if actions.recovery is None:
        return 409, {"error": "recovery is not available"}
    action = data.get("action")
    if not isinstance(action, str):
        return 400, {"error": "action must be one of start, jog, confirm, cancel"}
    return 200, {"touch_off": actions.recovery.touch_off(action, data.get("distance"))}


def _discard(actions, data, source):
    if actions.recovery is None or not actions.recovery.discard():
        return 409, {"error": "there is nothing to discard"}
    return 200, {"discarded": True}


def _settings(only_errors: bool):
    def handler(actions, data, source):
        values = data.get("settings")
        if not isinstance(values, dict):
            raise ValueError("'settings' must be a JSON object")
        body = actions.check_settings(values)
        if only_errors:
            body = {"errors": body["errors"]}
        if body["errors"]:
            # every refusal by setting; a preview still carries the G-code (the form marks the fields)
            return 400, dict(body, error="; ".join(body["errors"].values()))
        return 200, body

    return handler


_COMMON = {400: "bad parameters", 403: "not allowed"}

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "pause", "pause prints", CONTROL, ("reason", "source"),
            "pause the print now: hold, park, keep the state; reason and source are free text",
            {202: "pausing", 409: "not printing, already paused, or an SD print", **_COMMON}, _pausing("pause"),
        ),
        Command(
            "change_filament", "pause prints", CONTROL, ("reason", "source"),
            "a filament change now: hold, park at the change position, unload; then purge, resume",
            {202: "pausing for the change", 409: "not printing, already paused, or an SD print", **_COMMON},
            _pausing("change_filament"),
        ),
        Command(
            "purge", "pause prints", CONTROL, ("length",),
            "during a filament change: load (the first time), then extrude length mm (default: the "
            "purge length setting) at the change position",
            {202: "purging", 409: "not paused for a filament change", **_COMMON}, _purge, strict=True,
        ),
        Command(
            "resume", "resume prints", CONTROL, (), "resume a SafePause pause exactly where it stopped",
            {202: "resuming", 409: "not paused", **_COMMON}, _resume,
        ),
        Command(
            "cancel", "cancel prints", CONTROL, (), "cancel the paused print (OctoPrint's cancel script runs at once)",
            {202: "cancelling", 409: "no pause to cancel", **_COMMON}, _cancel,
        ),
        Command(
            "schedule", "schedule pauses", CONTROL, ("at", "action", "gcode", "message", "path"),
            "a stop before a layer: at {z: mm} | {layer: n} | {next_layer: true} | {every: n}; action "
            "pause | filament_change | gcode (with gcode: lines); message: shown when it is reached; path: "
            "kept with that file (else the running print only)",
            {200: "scheduled: the stop, its layer, Z and file position", 404: "no such local file",
             409: "not printing, already past, or the file's layers are still being read", **_COMMON},
            _schedule, own_gcode=("gcode",), strict=True,
        ),
        Command(
            "unschedule", "schedule pauses", CONTROL, ("id", "path"),
            "remove a scheduled stop (from the running print, and from its file if it is the file's; "
            "path: from that file)",
            {200: "removed", 404: "no such stop", **_COMMON}, _unschedule, strict=True,
        ),
        Command(
            "recover", "recover prints", CONTROL, ("position_kept", "power_lost", "start", "prelude", "path", "z"),
            "continue a print that died: power_lost true|false, position_kept true|false, "
            "start position|layer, prelude: your own lines; or any local file from a height: path, z (mm)",
            {202: "recovering", 409: "nothing to recover, not operational, a print running", **_COMMON},
            _recover, own_gcode=("prelude",), strict=True,
        ),
        Command(
            "touch_off", "recover prints", CONTROL, ("action", "distance"),
            "after a power loss, find the height by hand: action start (heat, home X/Y, go above the last "
            "printed point), jog with distance mm (negative: down) until the nozzle touches the print, "
            "confirm (continue with the next layer) or cancel",
            {200: "done", 409: "nothing to recover, no touch-off under way, printer busy", **_COMMON},
            _touch_off, strict=True,
        ),
        Command(
            "discard", "discard a print's recovery", CONTROL, (), "forget the print that could be recovered",
            {200: "discarded", 409: "nothing to discard", **_COMMON}, _discard,
        ),
        Command(
            "validate", "change settings", SETTINGS, ("settings",),
            "check settings as the settings page types them: errors by setting",
            {200: "valid", **_COMMON, 400: "refused settings, by setting"}, _settings(only_errors=True),
        ),
        Command(
            "preview", "change settings", SETTINGS, ("settings",),
            "the pause and resume G-code these settings would send, checked",
            {200: "the preview", **_COMMON, 400: "refused settings, by setting, and the preview"},
            _settings(only_errors=False),
        ),
    )
}  # fmt: skip


def run(actions, name: str, data: Any, source: str | None = None) -> tuple[int, dict]:
    """Validate `data` for command `name` and run it: (HTTP status, JSON body). Refusals are answers
    (400 bad parameters, 409 not now), never exceptions. Permissions are the caller's (see `allowed`)."""
    command = COMMANDS.get(name)
    if command is None:
        return 400, {"error": f"unknown command '{name}'"}
    if not isinstance(data, dict):
        return 400, {"error": "the body must be a JSON object"}
    if command.strict:
        unknown = sorted(set(data) - {"command", *command.params})
        if unknown:
            return 400, {"error": f"unknown parameter(s): {', '.join(unknown)}"}
    try:
        return command.handler(actions, data, source)
    except ValueError as error:
        return 400, {"error": str(error)}
    except Refused as refused:
        return 409, {"error": f"cannot {name}: {refused}", "state": actions.controller.get_state()}
    except RecoveryRefused as refused:
        return refused.status, {"error": f"cannot {name}: {refused}"}
    except StopRefused as refused:
        body = {"error": f"cannot {name}: {refused}"}
        if isinstance(refused, Analysing):
            body["analysing"] = True
        return refused.status, body


def refusal(name: str, data: Any, can: Callable[[str], bool]) -> str | None:
    """Why the current user may not run `name` with `data`, or None. `can(permission)` answers for
    CONTROL, SETTINGS and "gcode" (OctoPrint's own CONTROL: the terminal's permission)."""
    command = COMMANDS.get(name)
    if command is None:
        return None  # run() answers 400
    if not can(command.permission):
        return f"you are not allowed to {command.action}"
    own_gcode = isinstance(data, dict) and any(data.get(key) is not None for key in command.own_gcode)
    if own_gcode and not can("gcode"):
        return "sending your own G-code needs OctoPrint's Control permission"
    return None


def recovery_query(args) -> tuple[dict, str | None]:
    """Choices for GET's `recovery` preview from query parameters; (choices, error or None). With
    `path` (and `z`), the choices are for a file from a height (`from_height` in the answer)."""
    choices: dict = {}
    for name in ("position_kept", "power_lost"):
        value = args.get(name)
        if value is not None:
            if value.lower() not in ("true", "false"):
                return {}, f"{name} must be true or false"
            choices[name] = value.lower() == "true"
    start = args.get("start")
    if start is not None:
        choices["start"] = start
    path = args.get("path")
    if path is not None:
        choices["path"] = path
    z = args.get("z")
    if z is not None:
        try:
            choices["z"] = float(z)
        except ValueError:
            return {}, "z must be a number (mm)"
        if not math.isfinite(choices["z"]) or "path" not in choices:
            return {}, "z needs a path and must be a number (mm)"
    return choices, None
