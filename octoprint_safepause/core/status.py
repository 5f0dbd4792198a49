"""SafePause's one status: fixed keys, documented here, cheap to read.

REST (`GET /api/plugin/safepause`, and the `state` of every command's answer), the helpers
(`get_state`), the sidebar (OctoPrint's current-data push) and the events all return this dict or a
part of it named here: nothing shapes the state anywhere else. Pure: no OctoPrint import.
"""

from __future__ import annotations

# Every key, always present (null when it does not apply), and what it means.
KEYS = {
    "state": "idle, pausing, paused, resuming or cancelling",
    "since": "when the state last changed (Unix time, seconds)",
    "holding": "SafePause holds OctoPrint's job: no file line goes out",
    "error": "why the last pause or resume ended or was refused, until the next pause",
    "reason": "why the pause was asked for (text from whoever asked)",
    "source": "who asked: user:<name>, plugin:<id>, api, file, ...",
    "file": "the print file's path in OctoPrint's storage",
    "origin": "local (SD prints cannot be held)",
    "filepos": "byte offset in the file where the print goes on",
    "saved_line": "the file line held back at the pause, sent exactly once on resume",
    "position": "{x, y, z, e} of the print at the hold (logical, as the file names them)",
    "snapshot": "the whole tracked printer state at the hold (modes, offsets, temperatures, fans...)",
    "warnings": "what the pause could not do as configured, and why",
    "heaters_off": "the long-hold heater policy switched heaters off",
    "heater_action_in": "seconds until the heater policy acts next, or null",
    "change": "a filament change: {step: unloading, unloaded, purging or loaded, purged: mm}; null for a pause",
    "stops": "the running print's scheduled stops still ahead, in file order (docs/scheduled-stops.md)",
    "waiting": "layers: the print waits (held, no pause) until its file's layers are read for its scheduled stops; else null",
}

# The part the sidebar gets twice a second: everything but the full snapshot.
UI_KEYS = tuple(key for key in KEYS if key != "snapshot")
# The payload of the plugin_safepause_paused / _resumed / _cancelled events.
EVENT_KEYS = ("reason", "source", "file", "origin", "filepos", "position")


def idle(since: float, holding: bool = False, error: str | None = None, waiting: str | None = None) -> dict:
    """The status when no pause is live."""
    status = dict.fromkeys(KEYS)
    status.update(state="idle", since=since, holding=holding, error=error, warnings=[])
    status.update(heaters_off=False, stops=[])
    if waiting is not None:
        status.update(waiting=waiting, holding=True)
    return status


def ui(status: dict) -> dict:
    return {key: status[key] for key in UI_KEYS}


def event_payload(status: dict) -> dict:
    return {key: status[key] for key in EVENT_KEYS}
