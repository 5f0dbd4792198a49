"""REST commands: validate the body and map the controller's answer to a status code.

Pure enough to unit-test: no Flask here; the plugin turns (status, body) into a response.
"""

from __future__ import annotations

from .controller import Refused
from .recovery_service import RecoveryRefused

COMMANDS = {"pause": [], "resume": [], "cancel": [], "recover": [], "discard": []}
# What each command does, for the refusals ("you are not allowed to ...").
ACTIONS = {
    "pause": "pause prints",
    "resume": "resume prints",
    "cancel": "cancel prints",
    "recover": "recover prints",
    "discard": "discard a print's recovery",
}
RECOVER_KEYS = ("position_kept", "start", "prelude")
MAX_TEXT = 200


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


def handle_command(controller, command: str, data: dict, user: str = None, recovery=None) -> tuple[int, dict]:
    if not isinstance(data, dict):
        return 400, {"error": "the body must be a JSON object"}
    if command in ("recover", "discard"):
        return handle_recovery_command(recovery, command, data)
    try:
        if command == "pause":
            reason = clean_text(data, "reason")
            source = clean_text(data, "source") or (f"user:{user}" if user else "api")
            controller.pause(reason=reason, source=source)
        elif command == "resume":
            controller.resume()
        elif command == "cancel":
            controller.cancel()
        else:
            return 400, {"error": f"unknown command '{command}'"}
    except ValueError as error:
        return 400, {"error": str(error)}
    except Refused as refused:
        return 409, {"error": f"cannot {command}: {refused}", "state": controller.get_state()}
    return 202, {"state": controller.get_state()}


def handle_recovery_command(recovery, command: str, data: dict) -> tuple[int, dict]:
    if recovery is None:
        return 409, {"error": "recovery is not available"}
    try:
        if command == "discard":
            if not recovery.discard():
                return 409, {"error": "there is nothing to discard"}
            return 200, {"discarded": True}
        unknown = sorted(set(data) - {"command", *RECOVER_KEYS})
        if unknown:
            return 400, {"error": f"unknown parameter(s): {', '.join(unknown)}"}
        result = recovery.recover(**{key: data[key] for key in RECOVER_KEYS if key in data})
        return 202, {"recovery": result}
    except RecoveryRefused as refused:
        return refused.status, {"error": f"cannot {command}: {refused}"}


def recovery_query(args) -> tuple[dict, str]:
    """Choices for GET's `recovery` preview from query parameters; (choices, error or None)."""
    choices = {}
    kept = args.get("position_kept")
    if kept is not None:
        if kept.lower() not in ("true", "false"):
            return {}, "position_kept must be true or false"
        choices["position_kept"] = kept.lower() == "true"
    start = args.get("start")
    if start is not None:
        choices["start"] = start
    return choices, None
