"""A filament change run by the host, at the change position: unload, load, purge, and the retraction
the usual resume expects. Pure: the controller sends these lines (through the safety check) around a
SafePause pause parked at `change_position`.

The change is a pause like any other (same hold, same held-back line, same return); only what happens
at the park differs. Extrusion there leaves the print's E alone: the resume ends with `G92 E<e>` (or
Klipper's RESTORE_GCODE_STATE), so the lengths below never shift the toolpath.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gcode.state import KLIPPER
from .sequences import EPS, MotionSettings, PausePlan, Volume, _num

# The first, fast part of the unload: it tears the molten tip off cleanly before the long, slower pull
QUICK_PULL = 15.0  # mm
QUICK_PULL_SPEED = 50.0  # mm/s
# One beep for the user to come (Marlin, Prusa, RepRapFirmware; Klipper has no M300 of its own)
BEEP = "M300 S880 P200"
# Steps the status and the events name
UNLOADED, LOADED = "unloaded", "loaded"


@dataclass(frozen=True)
class ChangeSettings:
    """Validated values; settings_schema.SCHEMA holds their bounds and help texts (the change_* fields)."""

    unload_length: float = 100.0  # mm pulled back in all (the pause's own retraction included)
    unload_speed: float = 40.0  # mm/s, after the quick pull
    load_length: float = 90.0  # mm pushed in before purging
    load_speed: float = 6.0  # mm/s
    purge_length: float = 30.0  # mm extruded at the change position (and each "purge more")
    purge_speed: float = 3.0  # mm/s
    hotend_off_after: float = 30.0  # min of change before the hotend goes off; 0 = never
    x: float | None = None  # machine XY of the change position; None: the front, in the middle
    y: float | None = None


def change_position(volume: Volume, change: ChangeSettings) -> tuple[float, float]:
    """Where the change happens: the set point, else the front edge's middle (within reach of a user
    in front of the printer), always inside the volume."""
    x = change.x if change.x is not None else (volume.x_min + volume.x_max) / 2
    y = change.y if change.y is not None else volume.y_min + 10.0
    return volume.clamp_xy(x, y)


def already_retracted(state, plan: PausePlan) -> float:
    """mm the filament is pulled back from the nozzle at the park: the pause's retraction and the
    print's own (firmware retraction counts as none: its length is the firmware's)."""
    return plan.retracted + max(0.0, getattr(state, "retracted", 0.0) or 0.0)


def unload_lines(state, plan: PausePlan, change: ChangeSettings, flavour: str) -> list[str]:
    """Pull the filament out: a quick pull first, then the rest slowly; a beep."""
    remaining = max(0.0, change.unload_length - already_retracted(state, plan))
    quick = min(QUICK_PULL, remaining)
    lines = ["M83"]
    if quick > EPS:
        lines.append(f"G1 E-{_num(quick)} F{_num(QUICK_PULL_SPEED * 60)}")
    if remaining - quick > EPS:
        lines.append(f"G1 E-{_num(remaining - quick)} F{_num(change.unload_speed * 60)}")
    if flavour != KLIPPER:
        lines.append(BEEP)
    return lines


def load_lines(change: ChangeSettings) -> list[str]:
    return ["M83", f"G1 E{_num(change.load_length)} F{_num(change.load_speed * 60)}"]


def purge_lines(length: float, change: ChangeSettings) -> list[str]:
    return ["M83", f"G1 E{_num(length)} F{_num(change.purge_speed * 60)}"]


def ready_lines(state, plan: PausePlan, settings: MotionSettings) -> list[str]:
    """After loading and purging the nozzle is full; the resume un-retracts what the pause retracted,
    at the print. Pull back exactly that here, so the first line of the print meets the nozzle as the
    print left it."""
    if plan.fw_retract or getattr(state, "fw_retracted", False):
        # the firmware still counts itself retracted: clear that (a short push here, at the park) and
        # retract again, so that the resume's G11 restores exactly its own length at the print
        return ["G11", "G10"]
    total = already_retracted(state, plan)
    if total <= EPS:
        return []
    return ["M83", f"G1 E-{_num(total)} F{_num(settings.retract_speed * 60)}"]
