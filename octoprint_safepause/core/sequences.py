"""Pure pause / resume / cancel-restore G-code: a printer state, a build volume and settings in, lines out.

All motion is absolute (G90) in the print's logical coordinates: a relative hop that was clamped and
later undone in full drives the nozzle into the part. Every length we emit is in mm (G21 first, G20
back at the very end for inch prints). Nothing here imports OctoPrint.

The resume follows Marlin's order since its PR 17625: reheat while parked, optional prime at the park
position, travel XY at the safe height, lower Z, un-retract at the print, then E, modes, F and fans.
Per-flavour facts (mode coupling, long-hold timeouts, heater commands) are documented with sources in
docs/long-holds.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Union

from .gcode.state import FLAVOURS, KLIPPER, MARLIN, PRUSA, RRF

EPS = 1e-6
GCODE_STATE_NAME = "SAFEPAUSE"  # Klipper SAVE/RESTORE_GCODE_STATE slot

# The firmware's stock idle timeout (s), restored at resume unless the settings name another value:
# Marlin DEFAULT_STEPPER_TIMEOUT_SEC, Prusa DEFAULT_STEPPER_DEACTIVE_TIME, Klipper [idle_timeout]
# timeout, RepRapFirmware DefaultIdleTimeout.
STOCK_IDLE_TIMEOUT = {MARLIN: 120, PRUSA: 60, KLIPPER: 600, RRF: 30}
PRUSA_STOCK_SAFETY_TIMER = 30 * 60  # DEFAULT_SAFETYTIMER_TIME_MINS, MK3S


@dataclass(frozen=True)
class Volume:
    """The printable volume in machine coordinates (before G92 offsets)."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    z_min: float
    z_max: float
    circular: bool = False  # round bed centred on X0 Y0: XY must also lie within `radius`
    radius: float | None = None
    extruders: int = 1

    @classmethod
    def from_profile(cls, profile: dict | None) -> Volume:
        profile = profile or {}
        volume = profile.get("volume") or {}
        width = float(volume.get("width") or 200.0)
        depth = float(volume.get("depth") or 200.0)
        height = float(volume.get("height") or 200.0)
        circular = volume.get("formFactor") == "circular"
        if circular:
            depth = width  # OctoPrint forces this for round beds, and the origin to the centre
        if circular or volume.get("origin") == "center":
            box = {"x_min": -width / 2, "x_max": width / 2, "y_min": -depth / 2, "y_max": depth / 2}
        else:
            box = {"x_min": 0.0, "x_max": width, "y_min": 0.0, "y_max": depth}
        box.update(z_min=0.0, z_max=height)
        custom = volume.get("custom_box")
        if isinstance(custom, dict):
            for key in box:
                if custom.get(key) is not None:
                    box[key] = float(custom[key])
        return cls(
            box["x_min"],
            box["x_max"],
            box["y_min"],
            box["y_max"],
            box["z_min"],
            box["z_max"],
            circular=circular,
            radius=width / 2 if circular else None,
            extruders=cls.tools_of(profile),
        )

    @staticmethod
    def tools_of(profile: dict | None) -> int:
        """The profile's extruder count (1 when it cannot be read): OctoPrint drops T<n> beyond it, so it
        is also the trackers' `tools`."""
        try:
            return max(1, int((((profile or {}).get("extruder") or {}).get("count")) or 1))
        except (TypeError, ValueError, AttributeError):
            return 1

    def contains(self, x: float, y: float, z: float | None = None, eps: float = 1e-6) -> bool:
        if not (self.x_min - eps <= x <= self.x_max + eps and self.y_min - eps <= y <= self.y_max + eps):
            return False
        if self.circular and self.radius is not None and math.hypot(x, y) > self.radius + eps:
            return False
        return z is None or self.z_min - eps <= z <= self.z_max + eps

    def clamp_xy(self, x: float, y: float) -> tuple[float, float]:
        """The nearest point inside the volume's XY outline (box, and circle on round beds)."""
        x = _clamp(x, self.x_min, self.x_max)
        y = _clamp(y, self.y_min, self.y_max)
        if self.circular and self.radius is not None:
            distance = math.hypot(x, y)
            if distance > self.radius:
                scale = self.radius / distance
                x, y = x * scale, y * scale
        return x, y

    def auto_park(self) -> tuple[float, float]:
        """Marlin's default NOZZLE_PARK_POINT (X_MIN+10, Y_MAX-10); the rear edge on round beds."""
        if self.circular and self.radius is not None:
            return self.clamp_xy(0.0, self.radius - 10.0)
        return self.clamp_xy(self.x_min + 10.0, self.y_max - 10.0)


Park = Union[None, str, tuple[float, float]]


@dataclass(frozen=True)
class MotionSettings:
    """Validated values; settings_schema.SCHEMA holds the bounds and help texts of every field."""

    retract_length: float = 2.0  # mm of filament
    retract_speed: float = 35.0  # mm/s
    lift: float = 5.0  # mm above the nozzle's Z at pause
    clearance: float = 2.0  # mm above the highest deposited Z before any XY travel
    park: Park = None  # machine XY, "auto" (a rear corner), or None = lift only
    travel_speed: float = 100.0  # mm/s
    z_speed: float = 10.0  # mm/s
    prime_extra: float = 0.0  # extra mm pushed at the park position on resume, against the blob
    prime_speed: float = 5.0  # mm/s
    min_extrude_temp: float = 170.0
    top_margin: float = 0.0  # mm kept free below the volume's top
    fans_off: bool = True  # part fan(s) off while paused
    keep_steppers: bool = True  # stop the firmware's idle timeout from dropping the motors
    hold_backstop: float = 24.0  # h: firmware idle timeout while held, in case the host dies
    idle_timeout_restore: float = 0.0  # s restored at resume; 0 = the flavour's stock value
    hotend_off_after: float = 15.0  # min of hold before the hotends go off; 0 = never
    bed_off_after: float = 0.0  # min of hold before the bed goes off; 0 = never (keeps the part stuck)


@dataclass(frozen=True)
class PausePlan:
    """What a pause did, so resume can undo exactly that and nothing else."""

    lines: list[str]
    retracted: float  # mm the pause retracted itself with G1 E (0 if it did not)
    fw_retract: bool  # True if it retracted with G10
    safe_z: float | None  # logical Z the head was lifted to (None: no lift)
    parked: bool
    warnings: list[str] = field(default_factory=list)
    flavour: str = MARLIN
    travel_z: float | None = None  # logical Z of XY travel (safe_z, or Z when no lift was needed)
    xy_clear: bool = False  # XY travel at travel_z clears everything printed
    park_xy: tuple[float, float] | None = None  # logical XY of the park position
    hot: bool = False  # the hotend could extrude at pause time
    fans_off: bool = False
    steppers_held: bool = False  # the idle timeout was raised and must be restored
    gcode_state_saved: bool = False  # Klipper SAVE_GCODE_STATE NAME=SAFEPAUSE was sent

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HeaterStep:
    """One tick of the long-hold heater policy; see heater_policy()."""

    lines: list[str]  # send now (may be empty)
    done: frozenset[str]  # actions taken so far: pass back on the next call
    heaters_off: bool  # a heater was switched off: resume must reheat and wait
    next_check: float | None  # hold seconds at which the next action is due; None: nothing left


# ---------------------------------------------------------------------------------------------- helpers


def _num(value: float) -> str:
    # 6 decimals: E values of absolute-E prints reach thousands of mm with 5 decimals in the file.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _offset(state, axis: str) -> float | None:
    """machine = logical + offset; None when a G92 was sent while the axis was unknown."""
    offsets = getattr(state, "offsets", None) or {}
    if axis in offsets and offsets[axis] is None:
        return None
    return float(offsets.get(axis) or 0.0)


def _flavour(state, flavour: str | None = None) -> str:
    name = (flavour or getattr(state, "flavour", None) or MARLIN).lower()
    return name if name in FLAVOURS else MARLIN


def _inch(state, flavour: str) -> bool:
    # Klipper rejects G20 with an error and Prusa ignores it: their prints are in mm whatever was sent.
    return getattr(state, "units", "mm") == "inch" and flavour in (MARLIN, RRF)


def _active_tool(state) -> int | None:
    tool = getattr(state, "tool", None)
    if tool is None:
        return 0  # unknown: single-tool printers never send T
    return None if tool < 0 else tool  # T-1: nothing on the carriage (RepRapFirmware tool changers)


def _target(state, tool: int) -> float | None:
    return (getattr(state, "tool_temps", None) or {}).get(tool)


def _actual(temperatures: Mapping | None, key: str) -> float | None:
    """Actual temperature from OctoPrint's get_current_temperatures() shape ({"tool0": {"actual": ..}})."""
    if not temperatures:
        return None
    entry = temperatures.get(key)
    if isinstance(entry, Mapping):
        entry = entry.get("actual")
    try:
        return None if entry is None else float(entry)
    except (TypeError, ValueError):
        return None


def can_extrude(state, settings: MotionSettings, temperatures: Mapping | None = None) -> bool:
    """Hot enough to move filament: the target (and the reading, when known) at the minimum temperature."""
    tool = _active_tool(state)
    if tool is None:
        return False
    target = _target(state, tool)
    if target is None or target < settings.min_extrude_temp:
        return False
    actual = _actual(temperatures, f"tool{tool}")
    return actual is None or actual >= settings.min_extrude_temp


def _heated_tools(state) -> dict[int, float]:
    return {t: float(v) for t, v in sorted((getattr(state, "tool_temps", None) or {}).items()) if v and v > 0}


def fan_line(index: int, speed: float, flavour: str = MARLIN) -> str | None:
    if index == 0:
        # Without P: RepRapFirmware maps it to the current tool's fan, as the file's own M106 did.
        return f"M106 S{_num(speed)}"
    if flavour == KLIPPER:
        return None  # Klipper's M106 only drives [fan]; other fans are not M106-addressable
    return f"M106 P{index} S{_num(speed)}"


def fan_restore(state, flavour: str | None = None) -> list[str]:
    flavour = _flavour(state, flavour)
    lines = []
    for index, speed in sorted((getattr(state, "fans", None) or {}).items()):
        line = fan_line(int(index), float(speed), flavour)
        if line:
            lines.append(line)
    return lines


def _resolve_park(park: Park, volume: Volume) -> tuple[float, float] | None:
    if park is None or park is False:
        return None
    if isinstance(park, str):
        return volume.auto_park() if park == "auto" else None
    return float(park[0]), float(park[1])


# ----------------------------------------------------------------------------------------- long holds


def hold_lines(flavour: str, settings: MotionSettings) -> list[str]:
    """Keep the motors energised (and heaters on) through the hold; a long firmware backstop remains.

    Marlin and Prusa drop idle steppers after DEFAULT_STEPPER_TIMEOUT_SEC (120 s) / 60 s and do not
    notice a host-side hold; Klipper's idle_timeout runs TURN_OFF_HEATERS + M84 after 600 s of an idle
    toolhead; RepRapFirmware lowers motor current after 30 s (keeps position unless M906 I0).
    """
    backstop = max(1, int(round(settings.hold_backstop * 3600)))
    if flavour == KLIPPER:
        return [f"SET_IDLE_TIMEOUT TIMEOUT={backstop}"]
    if flavour == PRUSA:
        # M86: Prusa's safety timer turns the heaters off after 30 min when it sees no print job.
        return [f"M84 S{backstop}", f"M86 S{backstop}"]
    return [f"M84 S{backstop}"]  # Marlin, RepRapFirmware


def unhold_lines(flavour: str, settings: MotionSettings) -> list[str]:
    timeout = int(round(settings.idle_timeout_restore)) or STOCK_IDLE_TIMEOUT.get(flavour, 120)
    if flavour == KLIPPER:
        return [f"SET_IDLE_TIMEOUT TIMEOUT={timeout}"]
    if flavour == PRUSA:
        return [f"M84 S{timeout}", f"M86 S{PRUSA_STOCK_SAFETY_TIMER}"]
    return [f"M84 S{timeout}"]


def heater_policy(
    state,
    settings: MotionSettings,
    held_seconds: float,
    done: frozenset[str] = frozenset(),
    *,
    flavour: str | None = None,
) -> HeaterStep:
    """Long-hold heaters: hotends off after `hotend_off_after` min, bed after `bed_off_after` min.

    Call every few seconds while paused with the seconds since the hold began and the `done` of the
    previous step; send `lines`; pass `heaters_off` to resume_sequence(wait_for_heat=...).
    """
    flavour = _flavour(state, flavour)
    lines: list[str] = []
    done = frozenset(done)
    due: list[float] = []
    tools = _heated_tools(state)
    if flavour == RRF:
        # Only the active tool: M568 A0 switches its heater off and keeps both its temperatures
        # (M104 would overwrite the standby one, RRF 3.4+); docked tools stay at standby.
        current = _active_tool(state)
        tools = {t: v for t, v in tools.items() if t == current}
    if settings.hotend_off_after > 0 and tools and "hotend" not in done:
        at = settings.hotend_off_after * 60.0
        if held_seconds >= at:
            for tool in tools:
                lines.append(f"M568 P{tool} A0" if flavour == RRF else f"M104 T{tool} S0")
            done |= {"hotend"}
        else:
            due.append(at)
    bed = getattr(state, "bed_temp", None)
    if settings.bed_off_after > 0 and bed and bed > 0 and "bed" not in done:
        at = settings.bed_off_after * 60.0
        if held_seconds >= at:
            lines.append("M140 S0")
            done |= {"bed"}
        else:
            due.append(at)
    return HeaterStep(lines, done, bool(done & {"hotend", "bed"}), min(due) if due else None)


def needs_reheat(state, temperatures: Mapping | None, tolerance: float = 5.0) -> bool:
    """True if a target differs from the one saved at pause or a heater is well below its target.

    `temperatures` is OctoPrint's printer.get_current_temperatures(); firmware idle protections (Marlin
    HOTEND_IDLE_TIMEOUT) or a user may have changed the heaters behind the policy's back.
    """
    if not temperatures:
        return False
    saved = dict(_heated_tools(state))
    checks = [(f"tool{tool}", target) for tool, target in saved.items()]
    bed = getattr(state, "bed_temp", None)
    if bed and bed > 0:
        checks.append(("bed", float(bed)))
    for key, target in checks:
        entry = temperatures.get(key)
        if not isinstance(entry, Mapping):
            continue
        current_target = entry.get("target")
        actual = entry.get("actual")
        if current_target is not None and abs(float(current_target) - target) > 0.5:
            return True
        if actual is not None and float(actual) < target - tolerance:
            return True
    return False


# ------------------------------------------------------------------------------------------- sequences


def pause_sequence(
    state,
    volume: Volume,
    settings: MotionSettings,
    *,
    temperatures: Mapping | None = None,
    flavour: str | None = None,
) -> PausePlan:
    """Retract, lift, park, fans off, hold the motors. `temperatures`: OctoPrint's current readings."""
    flavour = _flavour(state, flavour)
    lines: list[str] = []
    warnings: list[str] = []
    saved_state = flavour == KLIPPER
    if saved_state:
        # Klipper restores G90/G91, M82/M83 (even under G91), G92 bases, F and M220/M221 from this.
        lines.append(f"SAVE_GCODE_STATE NAME={GCODE_STATE_NAME}")
    if _inch(state, flavour):
        lines.append("G21")
    lines.append("G90")  # before M83: on Marlin 2, G90 also makes E absolute

    hot = can_extrude(state, settings, temperatures)
    retracted, fw_retract = 0.0, False
    if settings.retract_length > 0:
        if _active_tool(state) is None:
            warnings.append("no tool selected (T-1): no retract")
        elif state.uses_fw_retract:
            if not state.fw_retracted:
                if hot:
                    lines.append("G10")
                    fw_retract = True
                else:
                    warnings.append("hotend below the minimum extrusion temperature: not retracted")
        else:
            # The print's own retraction counts: top it up, never retract twice.
            need = settings.retract_length - max(0.0, state.retracted or 0.0)
            if need > EPS:
                if hot:
                    lines += ["M83", f"G1 E-{_num(need)} F{_num(settings.retract_speed * 60)}"]
                    retracted = need
                else:
                    warnings.append("hotend below the minimum extrusion temperature: not retracted")

    safe_z = travel_z = None
    xy_clear = False
    if state.z is None:
        warnings.append("Z position unknown (not homed, no absolute move yet): no lift, no park")
    elif _offset(state, "Z") is None:
        warnings.append(
            "Z offset unknown (G92 while Z was unknown): the top of the volume is unknown, no lift"
        )
    else:
        z = state.z
        top = volume.z_max - settings.top_margin - _offset(state, "Z")
        wanted = z + max(0.0, settings.lift)
        if state.max_z is not None:
            wanted = max(wanted, state.max_z + settings.clearance)
        target = min(wanted, top)
        if target > z + EPS:
            lines.append(f"G1 Z{_num(target)} F{_num(settings.z_speed * 60)}")
            safe_z = travel_z = target
            if target < wanted - EPS:
                warnings.append(f"lift clamped to Z={_num(target)} by the top of the build volume")
            xy_clear = _clears(target, state.max_z, top, settings)
        elif wanted > z + EPS:
            warnings.append(
                f"no headroom above Z={_num(z)} (top of the volume): no lift, no XY travel; "
                "do not jog the head during this pause"
            )
        elif z > top + EPS:
            warnings.append(
                f"Z={_num(z)} is above the top of the build volume: no XY travel; "
                "do not jog the head during this pause"
            )
        else:
            travel_z = z  # no lift asked for and already clear of the print
            xy_clear = _clears(z, state.max_z, top, settings)

    parked = False
    park_xy = None
    park = _resolve_park(settings.park, volume)
    if park is not None and travel_z is not None:
        if None in (state.x, state.y, _offset(state, "X"), _offset(state, "Y")):
            warnings.append("XY position unknown: not parked")
        elif not xy_clear:
            warnings.append(
                "not enough room above the print to travel: not parked; do not jog the head during this pause"
            )
        else:
            mx, my = volume.clamp_xy(*park)
            if abs(mx - park[0]) > EPS or abs(my - park[1]) > EPS:
                warnings.append(f"park position moved into the build volume: X{_num(mx)} Y{_num(my)}")
            park_xy = (mx - _offset(state, "X"), my - _offset(state, "Y"))
            lines.append(f"G1 X{_num(park_xy[0])} Y{_num(park_xy[1])} F{_num(settings.travel_speed * 60)}")
            parked = True

    fans_off = False
    if settings.fans_off:
        for index, speed in sorted((state.fans or {}).items()):
            if speed and speed > 0:
                line = fan_line(int(index), 0, flavour)
                if line:
                    lines.append(line)
                    fans_off = True

    steppers_held = bool(settings.keep_steppers)
    if steppers_held:
        lines += hold_lines(flavour, settings)

    return PausePlan(
        lines,
        retracted,
        fw_retract,
        safe_z,
        parked,
        warnings,
        flavour=flavour,
        travel_z=travel_z,
        xy_clear=xy_clear,
        park_xy=park_xy,
        hot=hot,
        fans_off=fans_off,
        steppers_held=steppers_held,
        gcode_state_saved=saved_state,
    )


def _clears(z: float, max_z: float | None, top: float, settings: MotionSettings) -> bool:
    """XY travel at z passes over everything printed: by the clearance, or at the top of the volume."""
    if max_z is None:
        return True
    if z >= max_z + settings.clearance - EPS:
        return True
    return z >= top - EPS and z > max_z + EPS


def _mode_lines(state, flavour: str) -> list[str]:
    # Unknown modes were read as the power-on default (absolute) by the tracker: restore that, since
    # our own G90/M83 replaced whatever the printer had.
    relative_xyz = bool(state.relative_xyz)
    lines = ["G91" if relative_xyz else "G90"]
    if not (flavour == KLIPPER and relative_xyz):
        # Klipper under G91 extrudes relative whatever M82/M83 said; leave its flag alone.
        lines.append("M83" if state.relative_e else "M82")
    return lines


def mode_restore(state, plan: PausePlan | None = None, settings: MotionSettings | None = None) -> list[str]:
    """Axis modes back to the print's, XYZ first: on Marlin 2 G90/G91 also reset the E mode.

    With the plan of a pause that went out (cancel while held), Klipper's saved G-code state is restored
    and the raised idle timeout is put back too.
    """
    flavour = _flavour(state, plan.flavour if plan else None)
    if plan is not None and plan.gcode_state_saved:
        lines = [f"RESTORE_GCODE_STATE NAME={GCODE_STATE_NAME}"]
    else:
        lines = _mode_lines(state, flavour)
    if plan is not None and plan.steppers_held:
        lines += unhold_lines(flavour, settings or MotionSettings())
    if _inch(state, flavour):
        lines.append("G20")
    return lines


def reheat(state, wait: bool = True, *, flavour: str | None = None) -> list[str]:
    """Saved targets back, bed and hotends together, then waited for (bed first) before any extrusion."""
    flavour = _flavour(state, flavour)
    lines: list[str] = []
    bed = getattr(state, "bed_temp", None)
    bed = float(bed) if bed and bed > 0 else None
    tools = _heated_tools(state)
    if bed:
        lines.append(f"M140 S{_num(bed)}")
    if flavour == RRF:
        # The active tool's heater back on (heater_policy only switched that one off, keeping its
        # temperatures); M116 waits for every heater that is on.
        current = _active_tool(state)
        if current in tools:
            lines.append(f"M568 P{current} A2")
        if wait and (bed or tools):
            lines.append("M116")
        return lines
    for tool, target in tools.items():
        lines.append(f"M104 T{tool} S{_num(target)}")
    if wait:
        if bed:
            lines.append(f"M190 S{_num(bed)}")
        for tool, target in tools.items():
            lines.append(f"M109 T{tool} S{_num(target)}")
    return lines


def resume_sequence(
    state,
    plan: PausePlan,
    volume: Volume,
    settings: MotionSettings,
    wait_for_heat: bool = False,
    *,
    at_park: Sequence[str] = (),
) -> list[str]:
    """Reheat, travel XY at the safe height, lower Z, undo the pause's retract, then E, F, fans, modes.

    Waiting for temperatures costs Marlin's residency time even when already hot, so it is only done
    when the heaters were switched off during the hold (or someone may have changed them: see
    needs_reheat). `at_park`: user lines (resume template) run at the park position after the reheat.
    """
    lead, back_to_park, rest = resume_parts(state, plan, volume, settings, wait_for_heat)
    if not at_park:
        return lead + rest
    # Whatever the user's lines do to modes or position, the rest starts from a known place.
    return lead + list(at_park) + ["G90", "M83", *back_to_park] + rest


def resume_parts(
    state, plan: PausePlan, volume: Volume, settings: MotionSettings, wait_for_heat: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """resume_sequence in pieces: (up to the park position, the moves back to it, the rest), so that
    the user's lines between them can be told from SafePause's own (safety.check_resume)."""
    flavour = plan.flavour or _flavour(state)
    lines: list[str] = []
    if _inch(state, flavour):
        lines.append("G21")
    tool = getattr(state, "tool", None)
    if volume.extruders > 1 and tool is not None and tool >= 0:
        lines.append(f"T{tool}")  # a no-op unless someone switched tools during the hold
    if wait_for_heat:
        lines += reheat(state, wait=True, flavour=flavour)
    lines += ["G90", "M83"]  # G90 first: on Marlin 2 it resets E to absolute
    z_feed = f"F{_num(settings.z_speed * 60)}"
    xy_feed = f"F{_num(settings.travel_speed * 60)}"
    # Back up to the travel height and over to the park position first, in absolute coordinates: the
    # user may have jogged during the hold.
    up = plan.safe_z if plan.safe_z is not None else (plan.travel_z if plan.xy_clear else None)
    back_to_park = []
    if up is not None:
        back_to_park.append(f"G1 Z{_num(up)} {z_feed}")
    if plan.park_xy is not None:
        back_to_park.append(f"G1 X{_num(plan.park_xy[0])} Y{_num(plan.park_xy[1])} {xy_feed}")
    lines += back_to_park
    lead, lines = lines, []

    # Logical E must be restorable after the extra push: known E, or Klipper's saved G-code state.
    e_restorable = state.e is not None or plan.gcode_state_saved
    if settings.prime_extra > 0 and plan.park_xy is not None and plan.hot and e_restorable:
        # Against the blob, away from the part, then retracted again so the un-retract at the print
        # leaves the nozzle exactly as the print had it.
        prime_feed = f"F{_num(settings.prime_speed * 60)}"
        if plan.fw_retract or state.fw_retracted:
            lines += ["G11", f"G1 E{_num(settings.prime_extra)} {prime_feed}", "G10"]
        else:
            total = plan.retracted + max(0.0, state.retracted or 0.0)
            lines.append(f"G1 E{_num(total + settings.prime_extra)} {prime_feed}")
            if total > EPS:
                lines.append(f"G1 E-{_num(total)} F{_num(settings.retract_speed * 60)}")

    if plan.xy_clear and state.x is not None and state.y is not None:
        lines.append(f"G1 X{_num(state.x)} Y{_num(state.y)} {xy_feed}")
    if state.z is not None:
        lines.append(f"G1 Z{_num(state.z)} {z_feed}")
    if plan.fw_retract:
        lines.append("G11")
    elif plan.retracted > EPS:
        lines.append(f"G1 E{_num(plan.retracted)} F{_num(settings.retract_speed * 60)}")

    if plan.gcode_state_saved:
        # Modes, G92 bases, F and overrides; E is rebased to its value at SAVE time.
        lines.append(f"RESTORE_GCODE_STATE NAME={GCODE_STATE_NAME}")
    else:
        lines += _mode_lines(state, flavour)
        # Lengths in mm: before G20. G92 does not depend on the E mode on any flavour we drive.
        if state.e is not None:
            lines.append(f"G92 E{_num(state.e)}")
        if state.f is not None:
            lines.append(f"G1 F{_num(state.f)}")
    lines += fan_restore(state, flavour)
    if plan.steppers_held:
        lines += unhold_lines(flavour, settings)
    if _inch(state, flavour):
        lines.append("G20")
    return lead, back_to_park, lines
