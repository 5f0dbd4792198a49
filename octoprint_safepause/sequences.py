"""Pure pause / resume / cancel-restore G-code: a printer state, a build volume and settings in, lines out.

All motion is absolute (G90) in the print's logical coordinates: a relative hop that was clamped and
later undone in full drives the nozzle into the part. Nothing here imports OctoPrint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Volume:
    """The printable volume in machine coordinates."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    z_min: float
    z_max: float

    @classmethod
    def from_profile(cls, profile: dict) -> Volume:
        volume = (profile or {}).get("volume") or {}
        width = float(volume.get("width", 200.0))
        depth = float(volume.get("depth", 200.0))
        height = float(volume.get("height", 200.0))
        box = volume.get("custom_box") or None
        if box:
            return cls(
                float(box["x_min"]),
                float(box["x_max"]),
                float(box["y_min"]),
                float(box["y_max"]),
                float(box["z_min"]),
                float(box["z_max"]),
            )
        if volume.get("origin") == "center":
            return cls(-width / 2, width / 2, -depth / 2, depth / 2, 0.0, height)
        return cls(0.0, width, 0.0, depth, 0.0, height)


@dataclass(frozen=True)
class MotionSettings:
    retract_length: float = 2.0  # mm of filament
    retract_speed: float = 35.0  # mm/s
    lift: float = 5.0  # mm above the nozzle's Z at pause
    clearance: float = 2.0  # mm above the highest deposited Z before any XY travel
    park: Optional[Tuple[float, float]] = None  # machine XY, None = lift only
    travel_speed: float = 100.0  # mm/s
    z_speed: float = 10.0  # mm/s
    prime_extra: float = 0.0  # extra mm pushed at the park position on resume, against the blob
    min_extrude_temp: float = 170.0
    top_margin: float = 0.0  # mm kept free below the volume's top


@dataclass(frozen=True)
class PausePlan:
    """What a pause did, so resume can undo exactly that and nothing else."""

    lines: List[str]
    retracted: float  # mm the pause retracted itself (0 if it did not)
    fw_retract: bool  # True if it retracted with G10
    safe_z: Optional[float]  # logical Z the head was lifted to (None: no lift)
    parked: bool
    warnings: List[str] = field(default_factory=list)


def _num(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _offset(state, axis: str) -> float:
    return float((state.offsets or {}).get(axis, 0.0) or 0.0)


def _hot_enough(state, settings: MotionSettings) -> bool:
    tool = state.tool if state.tool is not None and state.tool >= 0 else 0
    target = (state.tool_temps or {}).get(tool)
    return target is not None and target >= settings.min_extrude_temp


def safe_height(state, volume: Volume, settings: MotionSettings) -> Optional[float]:
    """Logical Z for XY travel: lift above the nozzle and clear everything printed, within the volume."""
    if state.z is None:
        return None
    wanted = state.z + settings.lift
    if state.max_z is not None:
        wanted = max(wanted, state.max_z + settings.clearance)
    top = volume.z_max - settings.top_margin - _offset(state, "Z")
    return max(state.z, min(wanted, top))


def pause_sequence(state, volume: Volume, settings: MotionSettings) -> PausePlan:
    lines: List[str] = []
    warnings: List[str] = []
    if state.units == "inch":
        lines.append("G21")

    retracted = 0.0
    fw_retract = False
    if state.fw_retracted or state.retracted >= settings.retract_length:
        pass  # already retracted by the print itself: a second retract would leave a gap
    elif not _hot_enough(state, settings):
        warnings.append("hotend below extrusion temperature: no retract")
    elif state.uses_fw_retract:
        lines.append("G10")
        fw_retract = True
    elif settings.retract_length > 0:
        retracted = settings.retract_length - max(0.0, state.retracted)
        lines += ["M83", f"G1 E-{_num(retracted)} F{_num(settings.retract_speed * 60)}"]

    lines.append("G90")
    safe_z = safe_height(state, volume, settings)
    if safe_z is None:
        warnings.append("Z position unknown: no lift and no park")
    else:
        if safe_z < (state.z + settings.lift) - 1e-6:
            warnings.append(f"lift clamped to Z={_num(safe_z)} by the build volume")
        if safe_z > state.z:
            lines.append(f"G1 Z{_num(safe_z)} F{_num(settings.z_speed * 60)}")

    parked = False
    if settings.park is not None and safe_z is not None:
        if state.x is None or state.y is None:
            warnings.append("XY position unknown: not parked")
        else:
            px = _clamp(settings.park[0], volume.x_min, volume.x_max) - _offset(state, "X")
            py = _clamp(settings.park[1], volume.y_min, volume.y_max) - _offset(state, "Y")
            lines.append(f"G1 X{_num(px)} Y{_num(py)} F{_num(settings.travel_speed * 60)}")
            parked = True
    return PausePlan(lines, retracted, fw_retract, safe_z, parked, warnings)


def mode_restore(state) -> List[str]:
    """Axis modes back to the print's, XYZ first: on Marlin 2 G90/G91 also reset the E mode."""
    lines: List[str] = []
    if state.relative_xyz is not None:
        lines.append("G91" if state.relative_xyz else "G90")
    if state.relative_e is not None:
        lines.append("M83" if state.relative_e else "M82")
    if state.units == "inch":
        lines.append("G20")
    return lines


def resume_sequence(
    state, plan: PausePlan, volume: Volume, settings: MotionSettings, wait_for_heat: bool = False
) -> List[str]:
    """Reheat, travel XY at the safe height, lower Z, undo the pause's retract, then E, F, fans, modes.

    Waiting for temperatures costs Marlin's residency time even when already hot, so it is only done
    when the heaters were switched off during the hold (or someone may have changed them).
    """
    lines: List[str] = []
    if state.units == "inch":
        lines.append("G21")
    lines += reheat(state, wait=wait_for_heat)
    lines += ["G90", "M83"]
    if plan.safe_z is not None:
        lines.append(f"G1 Z{_num(plan.safe_z)} F{_num(settings.z_speed * 60)}")
        if settings.prime_extra > 0 and _hot_enough(state, settings):
            feed = _num(settings.retract_speed * 60)
            lines += [f"G1 E{_num(settings.prime_extra)} F{feed}"]
        if state.x is not None and state.y is not None:
            lines.append(f"G1 X{_num(state.x)} Y{_num(state.y)} F{_num(settings.travel_speed * 60)}")
        lines.append(f"G1 Z{_num(state.z)} F{_num(settings.z_speed * 60)}")
    if plan.fw_retract:
        lines.append("G11")
    elif plan.retracted > 0:
        lines.append(f"G1 E{_num(plan.retracted)} F{_num(settings.retract_speed * 60)}")
    if state.e is not None:
        lines.append(f"G92 E{_num(state.e)}")
    if state.f is not None:
        lines.append(f"G1 F{_num(state.f)}")
    lines += fan_restore(state)
    lines += mode_restore(state)
    return lines


def reheat(state, wait: bool = True) -> List[str]:
    """Targets back (and waited for, bed first) before anything extrudes."""
    lines: List[str] = []
    bed = state.bed_temp
    temps = {t: v for t, v in (state.tool_temps or {}).items() if v}
    if bed:
        lines.append(f"M140 S{_num(bed)}")
    for tool, target in sorted(temps.items()):
        lines.append(f"M104 T{tool} S{_num(target)}")
    if not wait:
        return lines
    if bed:
        lines.append(f"M190 S{_num(bed)}")
    for tool, target in sorted(temps.items()):
        lines.append(f"M109 T{tool} S{_num(target)}")
    return lines


def fan_restore(state) -> List[str]:
    lines = []
    for index, speed in sorted((state.fans or {}).items()):
        prefix = "M106" if index == 0 else f"M106 P{index}"
        lines.append(f"{prefix} S{int(speed)}")
    return lines
