"""The G-code that puts a printer back where a dead print stopped, before the rest of the file runs.

Pure: a ScanResult (gcode/fastscan.py) of the recorded position, one of the start point, a build volume
and settings in, lines out. Nothing here imports OctoPrint. docs/recovery.md explains the choices.

Two situations, chosen by the user:

* **position kept**: the printer stayed on (OctoPrint restarted, the USB link dropped): the firmware still
  knows where the head is, its G92 frame, its settings. Lift to the travel height, park, reheat (bed
  first), prime at the park position, travel over to the start point, lower, restore.
* **position lost** (power loss, a reset): the firmware believes nothing. Declare Z at the lowest height
  the nozzle may have stopped at, lift relatively (never into the top of the volume), home only the
  configured axes (X and Y: homing Z would drive the nozzle into the part, unless the printer homes Z
  at the top), heat and prime at the home position, travel above everything printed, lower, restore
  E, modes, feedrate, fans, overrides and the firmware settings the file had sent.

Z is declared *before* homing X/Y: several firmwares lift Z while homing X/Y when Z is not homed (Marlin's
Z_CLEARANCE_FOR_HOMING, RepRapFirmware's homex.g ``G1 H2 Z5``); declared first, that lift lands in the
firmware's own coordinates and stays accounted for. Klipper refuses moves before homing, so there the
declaration is ``SET_KINEMATIC_POSITION`` (which marks the axes homed) instead of G92.

The nozzle may have stopped a few lines before the recorded position (OctoPrint's recovery position is
what it had *read*, ahead of the firmware's buffers): Z is declared at the lowest Z of the last
``fastscan.Z_WINDOW`` lines, so a wrong guess prints slightly higher (a weak layer), never into the part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .. import filament
from ..gcode.fastscan import ScanResult
from ..gcode.state import KLIPPER, MARLIN, PRUSA, RRF
from ..safety import SafetyCheck
from ..sequences import (
    EPS,
    MotionSettings,
    Park,
    Volume,
    _clears,
    _inch,
    _num,
    _resolve_park,
    fan_restore,
    mode_restore,
    reheat,
)

POSITION, LAYER = "position", "layer"
STARTS = (POSITION, LAYER)
TAG = "safepause:recovery"

# Commands the prelude puts back (or that leave no lasting state), so a file using them needs no warning.
_RESTORED_OR_HARMLESS = frozenset(
    [
        "G0", "G1", "G2", "G3", "G4", "G10", "G11", "G20", "G21", "G28", "G90", "G91", "G92", "G92.1",
        "M0", "M1", "M17", "M18", "M25", "M73", "M75", "M76", "M77", "M82", "M83", "M84", "M104", "M105",
        "M106", "M107", "M108", "M109", "M110", "M114", "M115", "M116", "M117", "M118", "M140", "M141",
        "M190", "M191", "M220", "M221", "M300", "M400", "M486", "M568", "M600", "M601", "M862.1",
        "M862.3", "M862.5", "M862.6", "M862.4", "T", "G30", "G29", "G80", "G32", "M420",
    ]
)  # fmt: skip


class RecoveryError(ValueError):
    """The prelude cannot be made safe for this position (the message says why)."""


@dataclass(frozen=True)
class RecoverySettings:
    home_axes: str = "XY"  # what G28 homes when the position is lost; Z only if Z homes away from the part
    prime_length: float = 3.0  # mm pushed at the heating position (plus the print's own retraction)
    park: Park = "auto"  # where a kept-position recovery heats; None: above the print (then no prime)
    extra_lines: tuple[str, ...] = ()  # sent after homing, e.g. "M420 S1" to load a stored bed mesh

    def __post_init__(self):
        axes = "".join(a for a in "XYZ" if a in str(self.home_axes).upper())
        if not axes:
            raise ValueError("home_axes must name at least one of X, Y, Z")
        object.__setattr__(self, "home_axes", axes)
        if not (isinstance(self.prime_length, (int, float)) and 0 <= self.prime_length <= 50):
            raise ValueError("prime_length must be between 0 and 50 mm")


def settings_from(values: Mapping | None) -> RecoverySettings:
    """RecoverySettings from the plugin's raw settings (settings_schema's recovery_* fields); bad values fall back
    to the defaults."""
    values = values or {}
    try:
        prime = float(values.get("recovery_prime_length", 3.0))
    except (TypeError, ValueError):
        prime = 3.0
    prime = prime if math.isfinite(prime) and 0 <= prime <= 50 else 3.0
    axes = str(values.get("recovery_home_axes") or "XY")
    try:
        return RecoverySettings(axes, prime, "auto" if values.get("recovery_park", True) else None)
    except ValueError:
        return RecoverySettings(prime_length=prime)


@dataclass(frozen=True)
class Prelude:
    lines: list[str]
    start: int  # byte offset the file resumes from: OctoPrint's start_print(pos=start)
    start_pos: int  # the same place in OctoPrint's count (its filepos)
    start_choice: str  # POSITION or LAYER
    position_kept: bool
    travel_z: float  # logical Z of every XY travel
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "lines": list(self.lines),
            "start": self.start,
            "start_pos": self.start_pos,
            "start_choice": self.start_choice,
            "position_kept": self.position_kept,
            "travel_z": self.travel_z,
            "warnings": list(self.warnings),
        }


def _offset(state, axis: str) -> float:
    value = (state.offsets or {}).get(axis)
    if value is None:
        raise RecoveryError(
            f"the {axis} offset is unknown (the file sent G92 {axis} before {axis} was known): "
            "the machine position of the print cannot be found"
        )
    return float(value)


def declare_z(z: float, oz: float, flavour: str) -> str:
    """Tell the firmware the nozzle is at logical Z `z` (the frame's Z offset `oz`). Klipper refuses moves
    before homing: there SET_KINEMATIC_POSITION, which also marks the axes homed, takes machine Z."""
    return f"SET_KINEMATIC_POSITION Z={_num(z + oz)}" if flavour == KLIPPER else f"G92 Z{_num(z)}"


def _heat(state, flavour: str) -> list[str]:
    """Targets back and waited for, bed first, before anything extrudes."""
    lines: list[str] = []
    chamber = state.chamber_temp
    if chamber and chamber > 0:
        lines.append(f"M141 S{_num(chamber)}")  # not waited for: a chamber takes long and only helps
    if flavour != RRF:
        return lines + reheat(state, wait=True, flavour=flavour)
    # RepRapFirmware forgets tool temperatures on a reset, and reheat() only switches the stored ones
    # back on: set them explicitly, active and standby, then wait for the bed and for everything.
    bed = state.bed_temp
    if bed and bed > 0:
        lines.append(f"M140 S{_num(bed)}")
    for tool, temp in sorted((state.tool_temps or {}).items()):
        if temp and temp > 0:
            standby = (state.standby_temps or {}).get(tool, temp)
            lines.append(f"M568 P{tool} S{_num(temp)} R{_num(standby)}")
    tool = state.tool if state.tool is not None else 0  # a file that never selects one uses T0
    if tool >= 0 and (state.tool_temps or {}).get(tool):
        lines.append(f"M568 P{tool} A2")
    if bed and bed > 0:
        lines.append(f"M190 S{_num(bed)}")
    lines.append("M116")
    return lines


def _hot_enough(state, motion: MotionSettings) -> bool:
    tool = state.tool if state.tool is not None else 0
    if tool < 0:
        return False
    target = (state.tool_temps or {}).get(tool)
    return bool(target and target >= motion.min_extrude_temp)


def _prime(state, motion: MotionSettings, settings: RecoverySettings, maybe_fw_retracted: bool) -> list[str]:
    """Push the filament the print had pulled back plus `prime_length`, then pull the print's own
    retraction back again: the file's next un-retract then finds the nozzle as it left it."""
    lines = ["M83"]
    feed = f"F{_num(motion.prime_speed * 60)}"
    if state.uses_fw_retract:
        # Firmware retraction: end in the state the file expects, whatever the firmware believes now.
        if maybe_fw_retracted:
            lines.append("G11")  # a no-op unless the firmware was still retracted
        if settings.prime_length > 0:
            lines.append(f"G1 E{_num(settings.prime_length)} {feed}")
        if state.fw_retracted:
            lines.append("G10")
        return lines
    pulled = max(0.0, state.retracted or 0.0)
    if settings.prime_length + pulled > EPS:
        lines.append(f"G1 E{_num(settings.prime_length + pulled)} {feed}")
    if pulled > EPS:
        lines.append(f"G1 E-{_num(pulled)} F{_num(motion.retract_speed * 60)}")
    return lines


def _overrides(state, scan: ScanResult, flavour: str, volume: Volume) -> list[str]:
    """M220/M221 as the file left them (a reset puts them back to 100 %)."""
    lines: list[str] = []
    factor = state.feedrate_factor
    backup = scan.feedrate_backup
    if flavour in (MARLIN, PRUSA) and abs(backup - 100.0) > EPS:
        # Marlin applies B before S, Prusa too: "M220 B S<f>" saves the current factor, then sets f
        lines += [f"M220 S{_num(backup)}", f"M220 B S{_num(factor)}"]
    elif abs(factor - 100.0) > EPS:
        lines.append(f"M220 S{_num(factor)}")
    for tool, flow in sorted((state.flow_factors or {}).items()):
        if abs(flow - 100.0) <= EPS:
            continue
        if flavour == MARLIN and volume.extruders > 1:
            lines.append(f"M221 T{tool} S{_num(flow)}")
        elif flavour == RRF:
            lines.append(f"M221 D{tool} S{_num(flow)}")
        elif tool == (state.tool if state.tool is not None and state.tool >= 0 else 0):
            lines.append(f"M221 S{_num(flow)}")  # one factor (Klipper, Prusa, single-extruder Marlin)
    return lines


def _warnings(scan: ScanResult) -> list[str]:
    """What a reset lost that the prelude cannot put back."""
    state = scan.state
    out = []
    if state.macros:
        out.append(
            "macros before this point ran on the printer and are not replayed: "
            + ", ".join(sorted(state.macros))
            + " (check what they set: offsets, pressure advance, meshes...)"
        )
    if not state.homed:
        out.append(
            "the file does not home before this point (a start macro may): its coordinates are taken "
            "as the machine's"
        )
    replayed = {line.split(None, 1)[0].upper() for line in scan.settings}
    others = sorted(
        c
        for c in scan.commands
        if c not in _RESTORED_OR_HARMLESS and c not in state.macros and c not in replayed
    )
    if others:
        out.append("commands before this point that the prelude does not restore: " + ", ".join(others))
    if scan.probed:
        out.append(
            "the print probed or levelled the bed before this point; after a reset that mesh is gone. "
            "Add your firmware's command to load a stored mesh (Marlin M420 S1, Klipper "
            "BED_MESH_PROFILE LOAD=default, RepRapFirmware G29 S1) to the prelude, never a probing command"
        )
    if state.unreadable:
        out.append(f"{state.unreadable} line(s) before this point had words that could not be read")
    return out


def build_prelude(
    at_pos: ScanResult,
    at_start: ScanResult | None,
    volume: Volume,
    motion: MotionSettings,
    settings: RecoverySettings | None = None,
    *,
    position_kept: bool = False,
    start: str = POSITION,
    flavour: str | None = None,
    nozzle_z: float | None = None,
    load: filament.ChangeSettings | None = None,
) -> Prelude:
    """The prelude for resuming at `at_start` (the recorded position `at_pos`, or the start of its layer).

    `at_pos` describes where the print died (Z window, highest deposit, commands seen); `at_start` the
    state the file expects where it resumes (None: `at_pos`). `nozzle_z`: the logical Z (frame at the
    recorded position) the nozzle is known to be at, instead of the Z window: a SafePause hold that ended
    badly had lifted it there. `load`: the print stopped during a filament change with the filament pulled
    out; it is loaded and purged at the park (as the change's "Load and purge") before the prime. Raises
    RecoveryError when it cannot be made safe: position unknown, an unknown G92 frame, no room above the
    print to travel.
    """
    settings = settings or RecoverySettings()
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}")
    at_start = at_start or at_pos
    here = at_pos.state
    state = at_start.state
    flavour = flavour or state.flavour or MARLIN
    # With the position kept the firmware still has what the file set; after a reset it does not.
    warnings = [] if position_kept else _warnings(at_pos)

    if None in (state.x, state.y, state.z):
        raise RecoveryError("the print's position at the start point is unknown (no absolute move yet)")
    oz_here = _offset(here, "Z")
    ox, oy, oz = _offset(state, "X"), _offset(state, "Y"), _offset(state, "Z")
    z_low, z_high = at_pos.z_low, at_pos.z_high
    if nozzle_z is not None:
        z_low = z_high = float(nozzle_z)
    if z_low is None or z_high is None:
        raise RecoveryError(
            "the nozzle height where the print stopped is unknown (too close to the start of the file, "
            "or after probing): start the print again instead"
        )
    top = volume.z_max - motion.top_margin - oz_here  # logical, frame at the recorded position
    max_z = here.max_z  # highest deposit so far: the part the head must clear
    z_speed = f"F{_num(motion.z_speed * 60)}"
    xy_speed = f"F{_num(motion.travel_speed * 60)}"
    lines: list[str] = []
    inch = _inch(state, flavour)
    if inch:
        lines.append("G21")  # everything below is in mm

    # ---- up, out of the part, and (position lost) a known frame
    home_z = not position_kept and "Z" in settings.home_axes
    homing = [] if position_kept else [a for a in settings.home_axes if a != "Z"]
    if not position_kept and homing != ["X", "Y"]:
        raise RecoveryError("with the position lost, X and Y must be homed (home_axes)")
    if position_kept:
        # The firmware's Z is somewhere in the window; an absolute target above all of it only goes up.
        wanted = z_high + motion.lift
        if max_z is not None:
            wanted = max(wanted, max_z + motion.clearance)
        travel_z = min(wanted, top)
        if travel_z < z_high - EPS or not _clears(travel_z, max_z, top, motion):
            raise RecoveryError(
                f"no room above the print to travel (highest deposit Z{_num(max_z or 0)}, "
                f"top of the volume Z{_num(top)})"
            )
        if travel_z < wanted - EPS:
            warnings.append(f"travel height clamped to Z{_num(travel_z)} by the top of the build volume")
        lines += ["G90", f"G1 Z{_num(travel_z)} {z_speed}"]
    elif home_z:
        # The printer homes Z away from the part (a Z-max endstop): that is the lift, and the frame.
        lines.append("G28 Z")
        travel_z = top
    else:
        # Physical Z is at least z_low and at most z_high: lift so that even the lowest guess clears the
        # part, without the highest guess leaving the volume.
        uncertainty = z_high - z_low
        wanted = motion.lift
        if max_z is not None:
            wanted = max(wanted, max_z - z_low + motion.clearance)
        lift = max(0.0, min(wanted, top - z_high))
        travel_z = z_low + lift
        if not _clears(travel_z, max_z, top - uncertainty, motion):
            raise RecoveryError(
                f"no room above the print to home X/Y: the nozzle is at Z{_num(z_low)}..{_num(z_high)}, "
                f"the highest deposit at Z{_num(max_z or 0)}, the top of the volume at Z{_num(top)}"
            )
        if lift < wanted - EPS:
            warnings.append(f"lift clamped to {_num(lift)} mm by the top of the build volume")
        if uncertainty > EPS:
            warnings.append(
                f"the nozzle stopped between Z{_num(z_low)} and Z{_num(z_high)}; Z is declared at "
                f"Z{_num(z_low)}: if it was higher the print goes on up to {_num(uncertainty)} mm high"
            )
        lines.append(declare_z(z_low, oz_here, flavour))
        lines += ["G91", f"G1 Z{_num(lift)} {z_speed}", "G90"]
    if homing:
        lines.append("G28 " + " ".join(homing))
        if flavour == KLIPPER and not home_z and abs(oz_here) > EPS:
            lines.append(f"G92 Z{_num(travel_z)}")  # the print's Z frame on top of the kinematic one
        lines += list(at_pos.settings)  # firmware settings the file sent, forgotten by the reset
        lines += [line.strip() for line in settings.extra_lines if line.strip()]

    # The frame the firmware uses from here on: the print's own when the position was kept; after a reset
    # X/Y are the machine's (homed), Z the declared one (the print's frame at the recorded position).
    if position_kept:
        frame_x, frame_y, frame_z = _offset(here, "X"), _offset(here, "Y"), oz_here
    else:
        frame_x, frame_y, frame_z = 0.0, 0.0, (0.0 if home_z else oz_here)

    tool = state.tool
    if flavour == RRF and tool is None and not position_kept:
        tool = 0  # RepRapFirmware extrudes only with a tool selected; the file relied on the default one
    if tool is not None and tool >= 0 and (volume.extruders > 1 or (flavour == RRF and not position_kept)):
        lines.append(f"T{tool}")
        if flavour == RRF and volume.extruders > 1 and not position_kept:
            warnings.append(
                f"T{tool} on a tool changer runs its tool-change macros: check the carriage first"
            )

    # ---- heat where the ooze does no harm: the park position, or beside the bed after homing
    at_park = bool(homing)
    if position_kept:
        park = _resolve_park(settings.park, volume)
        if park is not None:
            px, py = volume.clamp_xy(*park)
            lines.append(f"G1 X{_num(px - frame_x)} Y{_num(py - frame_y)} {xy_speed}")
            at_park = True
    lines += _heat(state, flavour)
    loaded = False
    if not any(v and v > 0 for v in (state.tool_temps or {}).values()):
        warnings.append("no hotend temperature set before this point: nothing is heated, nothing primed")
    elif not _hot_enough(state, motion):
        warnings.append("the hotend target is below the minimum extrusion temperature: not primed")
    elif not at_park:
        warnings.append("no park position: not primed (the prime would drop onto the print)")
        if state.uses_fw_retract:
            lines += ["G11"] + (["G10"] if state.fw_retracted else [])
    else:
        if load is not None:
            lines += filament.load_lines(load) + filament.purge_lines(load.purge_length, load)
            loaded = True
        lines += _prime(state, motion, settings, maybe_fw_retracted=position_kept)
    if load is not None:
        warnings.insert(
            0,
            f"the print stopped during a filament change, with the filament pulled out: put the new "
            f"filament in before recovering; the recovery loads {_num(load.load_length)} mm and purges "
            f"{_num(load.purge_length)} mm at the park first"
            if loaded
            else "the print stopped during a filament change, with the filament pulled out, and it cannot "
            "be loaded here (no park position or no hot hotend): load it by hand before recovering",
        )

    # ---- back over the start point at the travel height, then down
    mx, my = state.x + ox, state.y + oy  # machine XY of the start point
    cx, cy = volume.clamp_xy(mx, my)
    if abs(cx - mx) > EPS or abs(cy - my) > EPS:
        warnings.append(
            f"the start point X{_num(mx)} Y{_num(my)} is outside the build volume: the head goes to "
            f"X{_num(cx)} Y{_num(cy)} instead"
        )
    lines.append(f"G1 X{_num(cx - frame_x)} Y{_num(cy - frame_y)} {xy_speed}")
    if abs(ox - frame_x) > EPS or abs(oy - frame_y) > EPS:
        lines.append(f"G92 X{_num(state.x)} Y{_num(state.y)}")  # the print's X/Y frame at the start point
    mz = state.z + oz  # machine Z of the start point
    cz = min(max(mz, volume.z_min), volume.z_max)
    if abs(cz - mz) > EPS:
        warnings.append(f"the start point Z{_num(mz)} is outside the build volume: lowered to Z{_num(cz)}")
    lines.append(f"G1 Z{_num(cz - frame_z)} {z_speed}")
    if abs(oz - frame_z) > EPS:
        lines.append(f"G92 Z{_num(state.z)}")  # the start point's Z frame (it differs from the current one)

    # ---- the print's modes, E, feedrate, fans, overrides
    modes = mode_restore(state)
    g20 = modes[-1:] == ["G20"]
    if g20:
        modes = modes[:-1]
    lines += modes
    if state.e is not None:
        lines.append(f"G92 E{_num(state.e)}")
    if state.f is not None:
        lines.append(f"G1 F{_num(state.f)}")
    lines += fan_restore(state, flavour)
    if not position_kept:
        lines += _overrides(state, at_pos, flavour, volume)
    if g20 or inch:
        lines.append("G20")
    start_pos = at_start.end
    return Prelude(
        lines=lines,
        start=at_start.end_offset,
        start_pos=start_pos,
        start_choice=start,
        position_kept=position_kept,
        travel_z=travel_z,
        warnings=warnings,
    )


def prelude_check(
    at_pos: ScanResult, volume: Volume, position_kept: bool, nozzle_z=None, flavour=None
) -> SafetyCheck:
    """The one safety check, seeded where a prelude starts: the nozzle at the lowest height it may
    have stopped at (`nozzle_z` when known), over a part as high as the file printed it; with the
    position lost, X and Y unknown and nothing set but the print's Z frame (the one the prelude declares
    Z in)."""
    here = at_pos.state
    z = float(nozzle_z) if nozzle_z is not None else at_pos.z_low
    oz = _offset(here, "Z")
    if position_kept:
        start = replace(here, z=z)
    else:
        frame = {"X": 0.0, "Y": 0.0, "Z": oz, "E": 0.0}
        start = replace(
            here, x=None, y=None, z=z, e=None, offsets=frame, relative_xyz=None, relative_e=None, units="mm"
        )
    max_z = here.max_z + oz if here.max_z is not None else None
    return SafetyCheck(volume, start, flavour=flavour or here.flavour, max_z=max_z)


# ---------------------------------------------------------------------------------------------- touch-off


@dataclass(frozen=True)
class TouchOff:
    """The first part of a touch-off after a power loss: heat, declare Z at the lowest height the nozzle
    may be at, lift clear of the part, home X and Y (never Z onto the part), and go above the last
    printed point. Then the user lowers Z until the nozzle touches the print."""

    lines: list
    z: float  # the logical Z (frame at the recorded position) the nozzle then stands at
    floor: float  # no jog goes below this logical Z: under the lowest the top of the part can be
    top: float  # nor above this one: the top of the build volume, less its margin
    x: float
    y: float


def touch_off_start(
    at_pos: ScanResult, volume: Volume, motion: MotionSettings, settings: RecoverySettings | None = None,
    *, flavour: str | None = None,
) -> TouchOff:  # fmt: skip
    """Raises RecoveryError when the print's position or the room above it is unknown."""
    settings = settings or RecoverySettings()
    here = at_pos.state
    flavour = flavour or here.flavour or MARLIN
    if None in (here.x, here.y) or at_pos.z_low is None or at_pos.z_high is None or here.max_z is None:
        raise RecoveryError("where the print stopped is unknown (too close to the start of the file)")
    oz = _offset(here, "Z")
    z_low, z_high = at_pos.z_low, at_pos.z_high
    top = volume.z_max - motion.top_margin - oz
    wanted = max(motion.lift, here.max_z - z_low + motion.clearance)
    lift = min(wanted, top - z_high)
    if lift < here.max_z - z_low + motion.clearance - EPS:
        raise RecoveryError("no room above the print to home X and Y")
    z_speed = f"F{_num(motion.z_speed * 60)}"
    ox, oy = _offset(here, "X"), _offset(here, "Y")
    x, y = volume.clamp_xy(here.x + ox, here.y + oy)  # machine XY: X/Y are homed, no offset any more
    lines = [declare_z(z_low, oz, flavour), "G91", f"G1 Z{_num(lift)} {z_speed}", "G90", "G28 X Y", *_heat(here, flavour)]
    lines.append(f"G1 X{_num(x)} Y{_num(y)} F{_num(motion.travel_speed * 60)}")
    # the top of the part under the nozzle is at most the window's uncertainty below the lowest guess
    floor = z_low - (z_high - z_low) - TOUCH_MARGIN
    return TouchOff(lines, z_low + lift, floor, top, x, y)


TOUCH_MARGIN = 1.0  # mm below the lowest the part's top can be that a jog may still go
