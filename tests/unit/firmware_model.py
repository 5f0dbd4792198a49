"""A small, independent firmware model for tests: runs G-code per flavour and records every move.

Written from the firmwares' sources and documentation (see docs/long-holds.md), not from the plugin's
tracker, so that the two can check each other. Only what a pause / resume touches is modelled:

* positions in machine coordinates, G92 offsets (machine = logical + offset), G20/G21, G28 (homes to 0);
* E: logical E (G92 E), the physical filament pushed, relative/absolute per flavour:
  Marlin 2: G90/G91 also set the E mode (gcode.h set_relative_mode); Klipper: G91 makes E relative
  whatever M82/M83 say, and M83 survives G90 (gcode_move.py cmd_G1); Prusa and RepRapFirmware: only
  M82/M83 touch E (Prusa G91 "E axis is left intact"; RRF GCodes2.cpp case 90/91);
* firmware retraction G10/G11: idempotent, moves filament, leaves logical E alone (Marlin
  fwretract.cpp, Klipper firmware_retraction.py); on RepRapFirmware G10 with P/S/R sets tool
  temperatures instead;
* heaters: M104 sets a target and does NOT heat (pessimistic: the reading stays where it was), M109 /
  M190 / M116 wait until reached (S waits only when heating), elapse() lets a long time pass;
  RepRapFirmware tool heater states (active / standby / off, T changes, M568 A);
* fans (M106/M107; Klipper's M106 only drives the part fan), Klipper SAVE/RESTORE_GCODE_STATE,
  idle-timeout commands (recorded, not simulated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AMBIENT = 20.0
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_TOOL = re.compile(r"T-?\d+")
_STANDARD = re.compile(r"[GM]\d+(?:\.\d+)?")
_WORD = re.compile(r"([A-Za-z])\s*([-+]?[\d.]*)")


@dataclass(frozen=True)
class Move:
    line: int  # number of lines fed when the move ran (1-based line of the command)
    start: tuple
    end: tuple
    e: float  # physical filament moved, mm (+ pushes)
    f: float | None  # mm/min in effect
    tool: int | None
    temp: float  # the tool's reading when the move ran
    target: float
    kind: str  # "move" (G0/G1) or "fw" (G10/G11)
    depth: float = 0.0  # filament retracted after the move: most ever pushed minus now

    @property
    def travels_xy(self) -> bool:
        return abs(self.end[0] - self.start[0]) > 1e-9 or abs(self.end[1] - self.start[1]) > 1e-9

    @property
    def deposits(self) -> bool:
        moved = any(abs(a - b) > 1e-9 for a, b in zip(self.start, self.end))
        return self.e > 1e-9 and moved


def _value(text: str) -> float | None:
    match = _NUMBER.match(text)
    return float(match.group(0)) if match else None


class Firmware:
    def __init__(
        self, flavour: str = "marlin", fw_retract_length: float = 1.0, fw_unretract_extra: float = 0.0
    ):
        self.flavour = flavour
        self.fw_length = fw_retract_length
        self.fw_extra = fw_unretract_extra
        self.pos = [0.0, 0.0, 0.0]
        self.offset = [0.0, 0.0, 0.0]
        self.e = 0.0  # logical
        self.filament = 0.0  # physical, cumulative
        self.filament_peak = 0.0  # the most ever pushed: peak - filament = how far it is retracted
        self.relative_xyz = False
        self.e_flag_relative = False  # the M82/M83 flag (Marlin 2: also set by G90/G91)
        self.inch = False
        self.f: float | None = None
        # RepRapFirmware starts with no tool selected (T-1); the others drive extruder 0.
        self.tool: int | None = -1 if flavour == "reprapfirmware" else 0
        self.targets: dict = {}
        self.actual: dict = {}
        self.bed_target = 0.0
        self.bed_actual = AMBIENT
        self.fans: dict = {}
        self.fw_retracted: dict = {}
        self.rrf_tools: dict = {}  # tool -> [active, standby, state 0 off / 1 standby / 2 active]
        self.saved_states: dict = {}
        self.idle_timeout: float | None = None  # Klipper SET_IDLE_TIMEOUT
        self.stepper_timeout: float | None = None  # M84/M18 S
        self.safety_timer: float | None = None  # Prusa M86 S
        self.motors_off = False
        self.max_deposit_z: float | None = None
        self.moves: list = []
        self.errors: list = []
        self.unknown: set = set()
        self.lines = 0

    # ------------------------------------------------------------------ running

    def clone(self) -> Firmware:
        other = Firmware.__new__(Firmware)
        other.__dict__.update(self.__dict__)
        for name in ("pos", "offset"):
            setattr(other, name, list(getattr(self, name)))
        for name in ("targets", "actual", "fans", "fw_retracted", "saved_states"):
            setattr(other, name, dict(getattr(self, name)))
        other.rrf_tools = {t: list(v) for t, v in self.rrf_tools.items()}
        other.moves = []
        other.errors = []
        other.unknown = set(self.unknown)
        return other

    def run(self, lines) -> Firmware:
        for line in lines:
            self.feed(line)
        return self

    def feed(self, raw: str) -> None:
        self.lines += 1
        line = raw.split(";", 1)[0].strip()
        if not line:
            return
        if line[0] in "Nn" and len(line) > 1 and line[1].isdigit():
            line = line.split(None, 1)[1] if " " in line else ""
            line = line.split("*", 1)[0].strip()
            if not line:
                return
        head, _, rest = line.partition(" ")
        command = head.upper()
        if _TOOL.fullmatch(command):
            self._tool(int(command[1:]))
            return
        if not _STANDARD.fullmatch(command):
            self._extended(command, rest)  # Klipper-style NAME KEY=VALUE commands and macros
            return
        params = {}
        for letter, text in _WORD.findall(rest):
            params[letter.upper()] = _value(text) if text else None
        handler = self._HANDLERS.get(command)
        if handler is None:
            self.unknown.add(command)
            return
        handler(self, params)

    def elapse(self) -> None:
        """A long time passes: every heater settles at its target (ambient when off)."""
        for tool in set(self.actual) | set(self.targets):
            self.actual[tool] = max(AMBIENT, self.targets.get(tool, 0.0))
        self.bed_actual = max(AMBIENT, self.bed_target)

    # ------------------------------------------------------------------ state

    def relative_e(self) -> bool:
        if self.flavour == "klipper":
            return self.relative_xyz or self.e_flag_relative
        return self.e_flag_relative

    def logical(self) -> tuple:
        return tuple(p - o for p, o in zip(self.pos, self.offset))

    def snapshot(self) -> dict:
        """What a resumed print depends on; timeouts are compared separately."""
        return {
            "pos": tuple(round(v, 6) for v in self.pos),
            "offset": tuple(round(v, 6) for v in self.offset),
            "e": round(self.e, 6),
            "relative_xyz": self.relative_xyz,
            "e_flag_relative": self.e_flag_relative,
            "relative_e": self.relative_e(),
            "inch": self.inch,
            "f": None if self.f is None else round(self.f, 6),
            "tool": self.tool,
            "targets": {t: v for t, v in self.targets.items() if v},
            "bed_target": self.bed_target,
            "fans": {i: v for i, v in self.fans.items()},
            "fw_retracted": {k: v for k, v in self.fw_retracted.items() if v},
            "rrf_tools": {t: tuple(v) for t, v in self.rrf_tools.items()},
        }

    # ------------------------------------------------------------------ moves

    def _record(self, start, end, e, kind) -> None:
        tool = self.tool
        if self.filament > self.filament_peak:
            self.filament_peak = self.filament
        move = Move(
            self.lines,
            tuple(start),
            tuple(end),
            e,
            self.f,
            tool,
            self.actual.get(tool, AMBIENT),
            self.targets.get(tool, 0.0),
            kind,
            self.filament_peak - self.filament,
        )
        self.moves.append(move)
        if move.deposits:
            top = max(start[2], end[2])
            if self.max_deposit_z is None or top > self.max_deposit_z:
                self.max_deposit_z = top

    def _g1(self, p) -> None:
        unit = 25.4 if self.inch else 1.0
        start = tuple(self.pos)
        for i, axis in enumerate("XYZ"):
            value = p.get(axis)
            if value is None:
                continue
            value *= unit
            self.pos[i] = self.pos[i] + value if self.relative_xyz else value + self.offset[i]
        feed = p.get("F")
        if feed is not None:
            if feed <= 0:
                self.errors.append(f"invalid feedrate F{feed}")
            else:
                self.f = feed * unit
        de = 0.0
        value = p.get("E")
        if value is not None:
            value *= unit
            de = value if self.relative_e() else value - self.e
            self.e += de
            self.filament += de
        self._record(start, self.pos, de, "move")

    def _g90(self, p) -> None:
        self.relative_xyz = False
        if self.flavour == "marlin":
            self.e_flag_relative = False

    def _g91(self, p) -> None:
        self.relative_xyz = True
        if self.flavour == "marlin":
            self.e_flag_relative = True

    def _m82(self, p) -> None:
        self.e_flag_relative = False

    def _m83(self, p) -> None:
        self.e_flag_relative = True

    def _g92(self, p) -> None:
        unit = 25.4 if self.inch else 1.0
        if not p:
            if self.flavour == "klipper":  # bare G92 zeroes every axis there
                self.offset = list(self.pos)
                self.e = 0.0
            return
        for i, axis in enumerate("XYZ"):
            if p.get(axis) is not None:
                self.offset[i] = self.pos[i] - p[axis] * unit
        if p.get("E") is not None:
            self.e = p["E"] * unit

    def _g28(self, p) -> None:
        axes = [i for i, axis in enumerate("XYZ") if axis in p] or [0, 1, 2]
        for i in axes:
            self.pos[i] = 0.0
            self.offset[i] = 0.0

    def _g20(self, p) -> None:
        if self.flavour == "klipper":
            self.errors.append("Machine does not support G20 (inches) command")
        elif self.flavour == "prusa":
            self.unknown.add("G20")  # "Prusa doesn't support inches": ignored
        else:
            self.inch = True

    def _g21(self, p) -> None:
        self.inch = False

    def _fw_retract(self, retract: bool) -> None:
        key = "all" if self.flavour == "klipper" else self.tool
        if bool(self.fw_retracted.get(key)) == retract:
            return  # doubled retracts/recovers are ignored by every flavour
        de = -self.fw_length if retract else self.fw_length + self.fw_extra
        self.filament += de
        self._record(self.pos, self.pos, de, "fw")
        self.fw_retracted[key] = retract

    def _g10(self, p) -> None:
        if self.flavour == "reprapfirmware" and any(k in p for k in "PSRXYZ"):
            tool = int(p["P"]) if p.get("P") is not None else self.tool
            entry = self._rrf(tool)
            if p.get("S") is not None:
                entry[0] = p["S"]
            if p.get("R") is not None:
                entry[1] = p["R"]
            self._rrf_sync(tool)
            return
        self._fw_retract(True)

    def _g11(self, p) -> None:
        self._fw_retract(False)

    # ------------------------------------------------------------------ heaters

    def _rrf(self, tool) -> list:
        return self.rrf_tools.setdefault(tool, [0.0, 0.0, 0])

    def _rrf_sync(self, tool) -> None:
        active, standby, state = self._rrf(tool)
        self.targets[tool] = active if state == 2 else standby if state == 1 else 0.0

    def _heater_tool(self, p):
        if p.get("T") is not None:
            return int(p["T"])
        return self.tool if self.tool is not None and self.tool >= 0 else 0  # else the default tool

    def _m104(self, p, wait: bool = False) -> None:
        value = p.get("S") if p.get("S") is not None else p.get("R")
        if value is None:
            return
        tool = self._heater_tool(p)
        if self.flavour == "reprapfirmware":
            entry = self._rrf(tool)
            entry[0] = entry[1] = value  # M104/M109 set active and standby (GCodes2.cpp case 104)
            if wait and (self.tool is None or self.tool < 0):
                self._tool(tool)  # M109 with no tool selected selects it
            elif tool == self.tool:
                entry[2] = 2
            else:
                entry[2] = 1
            self._rrf_sync(tool)
        else:
            self.targets[tool] = value
        if wait:
            target = self.targets.get(tool, 0.0)
            reading = self.actual.get(tool, AMBIENT)
            self.actual[tool] = target if p.get("R") is not None else max(reading, target)

    def _m109(self, p) -> None:
        self._m104(p, wait=True)

    def _m140(self, p, wait: bool = False) -> None:
        value = p.get("S") if p.get("S") is not None else p.get("R")
        if value is None:
            return
        self.bed_target = value
        if wait:
            self.bed_actual = value if p.get("R") is not None else max(self.bed_actual, value)

    def _m190(self, p) -> None:
        self._m140(p, wait=True)

    def _m116(self, p) -> None:
        if self.flavour not in ("reprapfirmware",):
            self.unknown.add("M116")
            return
        for tool, target in self.targets.items():
            self.actual[tool] = max(self.actual.get(tool, AMBIENT), target)
        self.bed_actual = max(self.bed_actual, self.bed_target)

    def _m568(self, p) -> None:
        if self.flavour != "reprapfirmware":
            self.unknown.add("M568")
            return
        tool = int(p["P"]) if p.get("P") is not None else self.tool
        entry = self._rrf(tool)
        if p.get("S") is not None:
            entry[0] = p["S"]
        if p.get("R") is not None:
            entry[1] = p["R"]
        if p.get("A") is not None:
            entry[2] = int(p["A"])
        self._rrf_sync(tool)

    def _tool(self, number) -> None:
        if number is None:
            return
        number = int(number)
        if self.flavour == "reprapfirmware":
            old = self.tool
            if old == number:
                return
            if old is not None and old >= 0:
                self._rrf(old)[2] = 1  # the deselected tool goes to standby
                self._rrf_sync(old)
            if number >= 0:
                self._rrf(number)[2] = 2
                self._rrf_sync(number)
        self.tool = number

    # ------------------------------------------------------------------ fans, timeouts, extended

    def _m106(self, p) -> None:
        speed = p.get("S")
        if speed is None:
            speed = 255.0
        index = 0 if self.flavour == "klipper" or p.get("P") is None else int(p["P"])
        self.fans[index] = speed

    def _m107(self, p) -> None:
        index = 0 if self.flavour == "klipper" or p.get("P") is None else int(p["P"])
        self.fans[index] = 0.0

    def _m84(self, p) -> None:
        if "S" in p and p["S"] is not None:
            self.stepper_timeout = p["S"]
        else:
            self.motors_off = True

    def _m86(self, p) -> None:
        if self.flavour == "prusa" and p.get("S") is not None:
            self.safety_timer = p["S"]
        else:
            self.unknown.add("M86")

    def _ignore(self, p) -> None:
        pass

    def _extended(self, command: str, rest: str) -> None:
        args = dict(part.split("=", 1) for part in rest.split() if "=" in part)
        args = {k.upper(): v for k, v in args.items()}
        if self.flavour != "klipper":
            self.unknown.add(command)
            return
        if command == "SAVE_GCODE_STATE":
            self.saved_states[args.get("NAME", "default")] = (
                self.relative_xyz,
                self.e_flag_relative,
                tuple(self.offset),
                self.e,
                self.f,
            )
        elif command == "RESTORE_GCODE_STATE":
            saved = self.saved_states.get(args.get("NAME", "default"))
            if saved is None:
                self.errors.append(f"Unknown g-code state: {args.get('NAME')}")
                return
            # MOVE=0: modes, G92 bases and speed back; E rebased to its logical value at SAVE time.
            self.relative_xyz, self.e_flag_relative, offset, self.e, self.f = saved
            self.offset = list(offset)
        elif command == "SET_IDLE_TIMEOUT":
            self.idle_timeout = float(args["TIMEOUT"])
        else:
            self.unknown.add(command)

    _HANDLERS = {
        "G0": _g1,
        "G1": _g1,
        "G4": _ignore,
        "G10": _g10,
        "G11": _g11,
        "G20": _g20,
        "G21": _g21,
        "G28": _g28,
        "G90": _g90,
        "G91": _g91,
        "G92": _g92,
        "M82": _m82,
        "M83": _m83,
        "M104": _m104,
        "M109": _m109,
        "M140": _m140,
        "M190": _m190,
        "M116": _m116,
        "M568": _m568,
        "M106": _m106,
        "M107": _m107,
        "M18": _m84,
        "M84": _m84,
        "M86": _m86,
    }
