"""What OctoPrint's own Pause / Resume / Cancel (web UI and `POST /api/job`) do with SafePause.

A SafePause pause is OctoPrint's pause (OctoPrint says Paused, fires PrintPaused / PrintResumed), so
OctoPrint's buttons show what they always show. The plugin's `octoprint.server.api.before_request`
handler asks `decide()` first, so that each of them acts on SafePause's pause the way it would on
OctoPrint's own (notes §4.1, docs/native-pause.md):

| SafePause state | OctoPrint Cancel | OctoPrint Pause | OctoPrint Resume / toggle |
|---|---|---|---|
| pausing, paused | SafePause cancel, 204 | 204, nothing to do (as OctoPrint on a paused print) | paused: SafePause resume, 204; pausing: 409 |
| resuming | OctoPrint's own | 409, "try again in a moment" | 409 |
| cancelling | OctoPrint's own | 409 | 409 |
| idle | OctoPrint's own | a SafePause pause (`take_over_pause`, on by default), else OctoPrint's own | OctoPrint's own |

Pure: no Flask, no OctoPrint. The caller checks the permission (OctoPrint's PRINT, as for /api/job
itself) and runs the action on the controller; when the controller refuses after all (a race with
another thread), it answers 409 with the controller's reason, or for a taken-over pause lets OctoPrint
pause natively (an SD card print).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

JOB_PATH = "/api/job"

CANCEL, RESUME, PAUSE = "cancel", "resume", "pause"

# Reason recorded for a pause taken over from OctoPrint's own Pause button or /api/job.
TAKE_OVER_REASON = "OctoPrint's Pause button"


@dataclass(frozen=True)
class Decision:
    """`action`: the SafePause call to make (cancel, resume, pause) or None to answer at once.
    `status`: the HTTP status to answer with (204 after a successful action, 409 for a refusal).
    `message`: the refusal's text for REST clients (the `error` field)."""

    action: str | None
    status: int
    message: str | None = None


def who(source: str | None) -> str | None:
    """A readable "by whom" from a controller `source` ("user:admin" -> "admin", "plugin:x" -> "plugin x")."""
    if not source:
        return None
    kind, _, name = source.partition(":")
    if kind == "user" and name:
        return name
    if kind == "plugin" and name:
        return f"plugin {name}"
    return source


def describe(state: dict, clock: Callable[[float], str] | None = None) -> str:
    """ "since 14:03 (plugin detector: spaghetti)" from a controller state: who paused, when and why."""
    clock = clock or (lambda t: time.strftime("%H:%M", time.localtime(t)))
    parts = []
    if state.get("since"):
        parts.append(f"since {clock(state['since'])}")
    details = [d for d in (who(state.get("source")), state.get("reason")) if d]
    if details:
        parts.append("(" + ": ".join(details) + ")")
    return " ".join(parts)


def _join(head: str, details: str, tail: str = "") -> str:
    return (f"{head} {details}" if details else head) + tail


def decide(
    method: str,
    path: str,
    body: Any,
    state: dict | Callable[[], dict],
    *,
    take_over_pause: bool = True,
    printer_state: str | None = None,
    clock: Callable[[float], str] | None = None,
) -> Decision | None:
    """None: let OctoPrint handle the request. `state` is the controller's get_state() (or a callable
    returning it, only called for a /api/job POST: this runs before every API request)."""
    if method != "POST" or path.rstrip("/") != JOB_PATH or not isinstance(body, dict):
        return None
    command = body.get("command")
    if command not in ("pause", "cancel"):
        return None  # start/restart: OctoPrint refuses them itself while printing
    action = body.get("action", "toggle")
    if command == "pause" and action not in ("pause", "resume", "toggle"):
        return None  # OctoPrint answers 400
    if callable(state):
        state = state()
    current = state.get("state")

    if command == "cancel":
        if current in ("pausing", "paused"):
            return Decision(CANCEL, 204)
        return None  # idle: OctoPrint's cancel; resuming/cancelling: it works once the hold is gone

    if current == "paused":
        if action == "pause":
            return Decision(None, 204)  # OctoPrint's own pause of a paused print does nothing, successfully
        return Decision(RESUME, 204)
    if current == "pausing":
        if action == "pause":
            return Decision(None, 204)
        return Decision(
            None, 409, _join("SafePause is still parking the head", describe(state, clock), "; resume once it is paused")
        )
    if current in ("resuming", "cancelling"):
        return Decision(None, 409, f"SafePause is {current} the print; try again in a moment")
    if take_over_pause and action in ("pause", "toggle") and printer_state == "printing":
        return Decision(PAUSE, 204)
    return None
