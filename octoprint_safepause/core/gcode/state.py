"""Machine state from the G-code stream: `StateTracker` feeds lines, `PrinterState` is a snapshot.

Conventions
-----------
* Positions are logical (what a G-code move names, after G92 offsets), in mm; feedrates in mm/min,
  also while the stream uses G20 inches. ``offsets[a]`` is the shift G92 (or Klipper's
  SET_GCODE_OFFSET) put between the two frames: ``machine = logical + offset``.
* None means unknown: the position before the first move or homing, every axis after probing
  (G29/G30/G80 ... leave the head somewhere we cannot know), an offset set while the axis was unknown.
* Motion modes start unknown (None) because the printer may have been left in any mode; until the stream
  sets one, moves are read as absolute, the power-on default of every firmware (and what OctoPrint's own
  analyser assumes). Cura files, for one, never send G90.
* A line the tracker cannot fully read (a malformed number, an axis word without a number) counts in
  ``unreadable``; the unreadable word changes nothing and the readable words of the line still apply.
  (Firmware differ here: Marlin's strtod would read ``Z0.30.2`` as Z0.30, Klipper rejects the whole
  line. Ignoring just that word is the middle course, and it never invents a value.) Lines of commands
  the tracker does not act on (M73, M862.3 "MK3S", ...) never count.
* ``retracted`` is the filament the slicer's own moves have pulled back and not pushed forward again,
  for the active extruder: every G0-G3 with an E delta updates ``retracted = max(0, retracted - dE)``.
  So E-only retractions count, and so does PrusaSlicer's wipe (a travel with negative E); a positive
  delta first undoes the retraction; G92 E moves no filament and changes nothing. Firmware retraction
  (G10/G11) is tracked apart in ``fw_retracted``. Both are kept per extruder across tool changes.
* ``max_z`` is the highest Z of any deposit so far: a move with X or Y (or an arc) whose E delta is
  positive (E-only moves are un-retractions, not deposits). It never drops when a sequential print goes
  back down. It is kept in machine coordinates and reported in the current logical frame, like
  ``layer_z``, the Z of the most recent deposit.
* Macros: extended (Klipper-style) commands the tracker does not model are recorded in ``macros``
  (first 64 names) and otherwise ignored; a macro may have moved the head, the caller can warn.

Firmware flavours (verified in the sources, see the comments at each handler)
--------------------------------------------------------------------------------
* marlin: Marlin 2.x. G90/G91 also set the E mode (``GcodeSuite::set_relative_mode`` overwrites all
  axis_relative bits, gcode/gcode.h); bare G92 does nothing (G92.cpp only touches axes it sees); G28
  zeroes the G92 shift of the homed axes (``set_axis_is_at_home``: ``position_shift[axis] = 0``).
* klipper: E is relative if G91 *or* M83 (klippy/extras/gcode_move.py cmd_G1: ``if not
  self.absolute_coord or not self.absolute_extrude``), G90 does not reset M83; bare G92 zeroes all four
  axes; G20 is refused; M104/M109/M140/M190 without S set 0; M106 drives the one part fan (no P).
* reprapfirmware: G90/G91 only touch X/Y/Z (GCodes2.cpp ``axesRelative``), E follows M82/M83 alone
  (``drivesRelative``); ``G10 P<t> S<active> R<standby>`` sets tool temperatures and is only a
  retraction without P/R/S/axis words (GCodes2.cpp case 10); M106 S<=1 is a fraction.
* prusa: Prusa-Firmware (MK3): G90/G91 leave E alone (Marlin_main.cpp: ``axis_relative_modes &=
  ~(X|Y|Z)``); no inches; bare G28 also runs G80 mesh levelling; M220 handles B, then S, then R.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

from .line import ParsedLine, parse_line, read_number

__all__ = ["FLAVOURS", "MODELLED_COMMANDS", "PrinterState", "StateTracker", "modelled_commands"]

MARLIN, KLIPPER, RRF, PRUSA = "marlin", "klipper", "reprapfirmware", "prusa"
FLAVOURS = (MARLIN, KLIPPER, RRF, PRUSA)  # THE firmware flavours; everything else names them from here

MAX_MACROS = 64
MAX_SAVED_STATES = 16
# Of StateTracker.export(): bump when a slot's meaning or codec changes (2: one key per slot, _SLOTS).
EXPORT_VERSION = 2

_NAN = float("nan")
_NEG_INF = float("-inf")
_MOVE_PREFIXES = frozenset(["G1 ", "G0 "])
_INCH = 25.4
_KEEP = object()


def _opt(v: float) -> float | None:
    return None if v - v else v  # NaN (unknown) and overflowed infinities -> None


@dataclass(frozen=True)
class PrinterState:
    """Immutable snapshot of the tracked printer state (see the module docstring for conventions)."""

    __slots__ = (
        "x", "y", "z", "e", "f", "tool", "relative_xyz", "relative_e", "units", "offsets", "homed",
        "tool_temps", "standby_temps", "bed_temp", "chamber_temp", "fans", "feedrate_factor",
        "flow_factors", "fw_retracted", "uses_fw_retract", "retracted", "max_z", "layer_z", "macros",
        "lines", "unreadable", "flavour",
    )  # fmt: skip

    x: float | None
    y: float | None
    z: float | None
    e: float | None
    f: float | None
    tool: int | None
    relative_xyz: bool | None
    relative_e: bool | None
    units: str
    offsets: Mapping[str, float | None]
    homed: frozenset[str]
    tool_temps: Mapping[int, float]
    standby_temps: Mapping[int, float]
    bed_temp: float | None
    chamber_temp: float | None
    fans: Mapping[int, float]
    feedrate_factor: float
    flow_factors: Mapping[int, float]
    fw_retracted: bool
    uses_fw_retract: bool
    retracted: float
    max_z: float | None
    layer_z: float | None
    macros: frozenset[str]
    lines: int
    unreadable: int
    flavour: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: lists for sets (sorted), dicts with string keys."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            v = getattr(self, name)
            if isinstance(v, frozenset):
                v = sorted(v)
            elif isinstance(v, Mapping):
                v = {str(k): v[k] for k in sorted(v)}
            out[name] = v
        return out


# Probing and levelling move the head to places the stream does not name: X/Y/Z become unknown,
# homing stays (every one of these requires it).
_PROBE_COMMANDS = frozenset(["G29", "G29.1", "G29.2", "G33", "G34", "G35", "M48"])
_PROBE_WORDS = frozenset(
    [
        "BED_MESH_CALIBRATE", "QUAD_GANTRY_LEVEL", "Z_TILT_ADJUST", "PROBE", "PROBE_ACCURACY",
        "PROBE_CALIBRATE", "SCREWS_TILT_CALCULATE", "DELTA_CALIBRATE", "Z_ENDSTOP_CALIBRATE",
        "MANUAL_PROBE", "BED_TILT_CALIBRATE", "AXIS_TWIST_COMPENSATION_CALIBRATE",
    ]
)  # fmt: skip
# Klipper commands that change nothing the tracker models; everything else unknown is a "macro".
_NEUTRAL_WORDS = frozenset(
    [
        "SET_PRINT_STATS_INFO", "EXCLUDE_OBJECT_DEFINE", "EXCLUDE_OBJECT_START", "EXCLUDE_OBJECT_END",
        "EXCLUDE_OBJECT", "SET_VELOCITY_LIMIT", "SET_PRESSURE_ADVANCE", "RESPOND", "SET_DISPLAY_TEXT",
        "GET_POSITION", "GET_RETRACTION", "TEMPERATURE_WAIT", "SET_IDLE_TIMEOUT", "M117", "STATUS",
    ]
)  # fmt: skip


def _pairs(d: Mapping) -> list:
    return [[k, v] for k, v in d.items()]  # JSON objects only have string keys; tools are ints or None


def _export_saved(saved: Mapping) -> dict:
    return {
        name: [rel, ebit, list(offs), list(khome), list(machine), e, f, ff, _pairs(flow)]
        for name, (rel, ebit, offs, khome, machine, e, f, ff, flow) in saved.items()
    }


def _restore_saved(data: Mapping) -> dict:
    return {
        name: (
            rel, ebit, tuple(float(v) for v in offs), [float(v) for v in khome],
            tuple(float(v) for v in machine), float(e), float(f), float(ff), {k: float(v) for k, v in flow},
        )
        for name, (rel, ebit, offs, khome, machine, e, f, ff, flow) in data.items()
    }  # fmt: skip


def _same(v):
    return v


# (to JSON, from JSON) per kind of slot. Python's json keeps NaN and the infinities, so floats round-trip
# exactly.
_FLOAT = (_same, float)
_INT = (_same, int)
_BOOL = (_same, bool)
_AS_IS = (_same, _same)  # str, None-or-bool, None-or-int
_FLOAT_TUPLE = (list, lambda v: tuple(float(x) for x in v))
_FLOAT_LIST = (list, lambda v: [float(x) for x in v])
_FLOAT_MAP = (_pairs, lambda v: {k: float(x) for k, x in v})
_BOOL_MAP = (_pairs, lambda v: {k: bool(x) for k, x in v})
_NAMES = (sorted, set)
_SAVED = (_export_saved, _restore_saved)
# Not exported: REBUILT comes back equal from __init__ or restore() (the comment says from what),
# TRANSIENT starts afresh (a memo or an observer: the tracker goes on alike without it).
_REBUILT, _TRANSIENT = "rebuilt", "transient"

# THE declaration of the tracker's state: StateTracker.__slots__ is made from it, and export() / restore()
# carry exactly the slots that have a codec (a tuple). A new slot is one line here (restore() would otherwise
# never see it; tests/unit/test_state.py round-trips every slot).
_SLOTS: dict[str, tuple | str] = {
    "flavour": _AS_IS, "lines": _INT, "unreadable": _INT,
    "_x": _FLOAT, "_y": _FLOAT, "_z": _FLOAT, "_e": _FLOAT, "_f": _FLOAT,
    "_fs": _TRANSIENT,  # the fast path's memo of the F word: None only makes the next F be read again
    "_ox": _FLOAT, "_oy": _FLOAT, "_oz": _FLOAT, "_oe": _FLOAT,
    "_rel": _AS_IS, "_ebit": _AS_IS, "_erel": _AS_IS, "_scale": _FLOAT,
    "_mm": _REBUILT,  # from _scale and _fast (_set_scale)
    "_fast": _BOOL,
    "_retr": _FLOAT, "_retr_tools": _FLOAT_MAP, "_fwr": _BOOL, "_fwr_tools": _BOOL_MAP, "_uses_fwr": _BOOL,
    "_maxz": _FLOAT, "_layerz": _FLOAT, "_tool": _AS_IS, "_homed": _NAMES, "_home": _FLOAT_TUPLE,
    "_temps": _FLOAT_MAP, "_standby": _FLOAT_MAP, "_bed": _FLOAT, "_chamber": _FLOAT, "_fans": _FLOAT_MAP,
    "_ffactor": _FLOAT, "_ffbackup": _FLOAT, "_flow": _FLOAT_MAP, "_macros": _NAMES, "_saved": _SAVED,
    "_khome": _FLOAT_LIST,
    "_handlers": _REBUILT,  # from flavour
    "_watch": _TRANSIENT,  # an observer of one scan, not state
    "_tools": _AS_IS,
}  # fmt: skip


class StateTracker:
    """Feeds raw G-code lines (``feed``), never raises, and builds ``state`` snapshots on demand.

    ``home_position`` maps axis letters to where G28 leaves the head (logical, before any G92); axes
    not given are unknown after homing, which is the safe default: the firmware's home position (endstop
    side, probe offsets, Z raise after homing) is not in the stream.
    """

    __slots__ = tuple(_SLOTS)

    def __init__(
        self,
        flavour: str = "marlin",
        *,
        home_position: Mapping[str, float] | None = None,
        tools: int | None = None,
    ):
        if flavour not in FLAVOURS:
            raise ValueError(
                "unknown firmware flavour {!r}: expected one of {}".format(flavour, ", ".join(FLAVOURS))
            )
        self.flavour = flavour
        self.lines = 0
        self.unreadable = 0
        self._x = self._y = self._z = self._e = self._f = _NAN
        self._fs = None  # spelling of the F word that set _f on the fast path
        self._ox = self._oy = self._oz = self._oe = 0.0
        self._rel: bool | None = None
        self._ebit: bool | None = None
        self._erel: bool | None = None
        self._scale = 1.0
        self._fast = True  # tests switch the fast path off to compare it with the general one
        self._mm = True  # fast path allowed: millimetres and not disabled
        self._retr = 0.0
        self._retr_tools: dict[int | None, float] = {}
        self._fwr = False
        self._fwr_tools: dict[int | None, bool] = {}
        self._uses_fwr = False
        self._maxz = _NEG_INF
        self._layerz = _NAN
        self._tool: int | None = None
        self._homed: set = set()
        home = {str(k).upper(): float(v) for k, v in (home_position or {}).items()}
        self._home = tuple(home.get(a, _NAN) for a in "XYZ")
        self._temps: dict[int, float] = {}
        self._standby: dict[int, float] = {}
        self._bed = _NAN
        self._chamber = _NAN
        self._fans: dict[int, float] = {}
        self._ffactor = 100.0
        self._ffbackup = 100.0
        self._flow: dict[int, float] = {}
        self._macros: set = set()
        self._saved: dict[str, tuple] = {}
        self._khome = [0.0, 0.0, 0.0, 0.0]  # Klipper's homing_position (SET_GCODE_OFFSET)
        self._handlers = _HANDLERS[flavour]
        self._watch: Callable[[ParsedLine, str], None] | None = None  # see watch()
        # How many tools the host lets through: OctoPrint drops T<n> for n >= the printer profile's
        # extruder count, so the printer never selects them (None: every T counts).
        self._tools = tools

    # ------------------------------------------------------------------ feeding

    def feed(self, line: str) -> None:
        """Apply one raw line (with or without its newline). Never raises."""
        self.lines += 1
        try:
            # Hot path: a plain "G1 X.. Y.. E.." line in millimetres, about 90 % of a print. Any word
            # it does not expect sends the whole line to the general path, so both agree by design
            # (and a test feeds random lines through both to check it).
            head = line[:3]
            if (head == "G1 " or head == "G0 ") and self._mm:
                x = y = z = e = f = ft = None
                acc = 0.0  # float() also reads nan, inf and overflows (unreadable): one check for all
                try:
                    for t in line[3:].split():
                        c = t[0]
                        if c == "X":
                            x = float(t[1:])
                            acc += x
                        elif c == "Y":
                            y = float(t[1:])
                            acc += y
                        elif c == "E":
                            e = float(t[1:])
                            acc += e
                        elif c == "F":
                            if t != self._fs:  # feedrates repeat: convert each spelling once
                                f = float(t[1:])
                                acc += f
                                ft = t
                        elif c == "Z":
                            z = float(t[1:])
                            acc += z
                        elif c == ";":
                            break
                        else:
                            raise ValueError
                except ValueError:
                    self._general(line)
                    return
                if acc - acc:  # nan or inf somewhere (or finite values summing past 1e308: rare, exact anyway)
                    self._general(line)
                    return
                rel = self._rel
                if x is not None:
                    self._x = self._x + x if rel else x
                if y is not None:
                    self._y = self._y + y if rel else y
                if z is not None:
                    self._z = self._z + z if rel else z
                if f is not None and f > 0.0:
                    self._f = f
                    self._fs = ft
                if e is not None:
                    if self._erel:
                        de = e
                        self._e += e
                    else:
                        de = e - self._e
                        self._e = e
                    if de > 0.0:
                        if self._retr:
                            r = self._retr - de
                            self._retr = r if r > 0.0 else 0.0
                        if x is not None or y is not None:
                            zm = self._z + self._oz
                            if zm > self._maxz:
                                self._maxz = zm
                            self._layerz = zm
                    elif de < 0.0:
                        self._retr -= de
                    elif de != de and e > 0.0 and (x is not None or y is not None):
                        self._deposit()
                return
            if head[:1] == ";" or not line or line.isspace():
                return  # comment or blank line
            self._general(line)
        except Exception:  # a tracker bug must never reach OctoPrint's comm thread
            self.unreadable += 1

    def feed_many(self, lines: Iterable[str]) -> None:
        feed = self.feed
        for line in lines:
            feed(line)

    def _general(self, line: str) -> None:
        self._fs = None  # the fast path's feedrate memo: any other line may change F
        p = parse_line(line)
        watch = self._watch
        if watch is not None:
            with contextlib.suppress(Exception):  # an observer must not change what the tracker counts
                watch(p, line)
        cmd = p.command
        if cmd is None:
            if p.malformed:
                self.unreadable += 1
            return
        handler = self._handlers.get(cmd)
        if handler is None:
            if cmd[0] == "@":  # OctoPrint host command, never sent to the printer
                return
            c0 = cmd[0]
            if not (c0 in "GMTD" and len(cmd) > 1 and (cmd[1].isdigit() or cmd[1] == ".")):
                if cmd in _PROBE_WORDS:
                    self._probed()
                elif cmd not in _NEUTRAL_WORDS and len(self._macros) < MAX_MACROS:
                    self._macros.add(cmd)
            return
        if handler(self, p) or p.malformed:
            self.unreadable += 1

    # ------------------------------------------------------------------ snapshot

    @property
    def state(self) -> PrinterState:
        oz = self._oz
        maxz = self._maxz - oz if self._maxz != _NEG_INF else _NAN
        return PrinterState(
            x=_opt(self._x),
            y=_opt(self._y),
            z=_opt(self._z),
            e=_opt(self._e),
            f=_opt(self._f),
            tool=self._tool,
            relative_xyz=self._rel,
            relative_e=self._erel,
            units="inch" if self._scale != 1.0 else "mm",
            offsets=MappingProxyType(
                {"X": _opt(self._ox), "Y": _opt(self._oy), "Z": _opt(oz), "E": _opt(self._oe)}
            ),
            homed=frozenset(self._homed),
            tool_temps=MappingProxyType(dict(self._temps)),
            standby_temps=MappingProxyType(dict(self._standby)),
            bed_temp=_opt(self._bed),
            chamber_temp=_opt(self._chamber),
            fans=MappingProxyType(dict(self._fans)),
            feedrate_factor=self._ffactor,
            flow_factors=MappingProxyType(dict(self._flow)),
            fw_retracted=self._fwr,
            uses_fw_retract=self._uses_fwr,
            retracted=self._retr,
            max_z=_opt(maxz),
            layer_z=_opt(self._layerz - oz),
            macros=frozenset(self._macros),
            lines=self.lines,
            unreadable=self.unreadable,
            flavour=self.flavour,
        )

    def position(self):
        """(x, y, z, e) logical, None where unknown: cheaper than a full snapshot."""
        return (_opt(self._x), _opt(self._y), _opt(self._z), _opt(self._e))

    # ------------------------------------------------------------------ checkpoints

    def watch(self, observer: Callable[[ParsedLine, str], None] | None) -> None:
        """Call `observer(parsed, raw_line)` for every line that is not a plain G0/G1 move, a comment or
        blank (the lines the tracker parses in full). For scanners that want the commands a file used;
        an observer that raises is ignored. None removes it."""
        self._watch = observer

    def export(self) -> dict[str, Any]:
        """Everything the tracker knows, ready for Python's json (floats round-trip exactly, NaN and
        infinities included): ``StateTracker.restore(t.export())`` continues exactly like `t`."""
        out: dict[str, Any] = {"v": EXPORT_VERSION}
        for name, codec in _SLOTS.items():
            if isinstance(codec, tuple):
                out[name] = codec[0](getattr(self, name))
        return out

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> StateTracker:
        """A tracker that goes on exactly like the one `data` was exported from. Raises ValueError for
        data of another export version."""
        if data.get("v") != EXPORT_VERSION:
            raise ValueError(f"tracker export version {data.get('v')!r}, expected {EXPORT_VERSION}")
        t = cls(data["flavour"], tools=data["_tools"])  # checks the flavour, sets _handlers
        for name, codec in _SLOTS.items():
            if isinstance(codec, tuple):
                setattr(t, name, codec[1](data[name]))
        t._set_scale(t._scale)  # _mm
        return t

    # ------------------------------------------------------------------ helpers for the handlers

    def _deposit(self) -> None:
        zm = self._z + self._oz
        if zm > self._maxz:
            self._maxz = zm
        self._layerz = zm

    def _probed(self) -> None:
        self._x = self._y = self._z = _NAN

    def _set_modes(self, rel=_KEEP, ebit=_KEEP) -> None:
        if rel is not _KEEP:
            self._rel = rel
        if ebit is not _KEEP:
            self._ebit = ebit
        if self.flavour == "klipper":
            # absolute_coord and absolute_extrude are separate; E is relative if either says so
            if self._rel or self._ebit:
                self._erel = True
            elif self._rel is False and self._ebit is False:
                self._erel = False
            else:
                self._erel = None
        else:
            self._erel = self._ebit

    def _set_scale(self, scale: float) -> None:
        self._scale = scale
        self._mm = scale == 1.0 and self._fast

    def _heater_tool(self, p: ParsedLine) -> int | None:
        """The hotend a temperature command addresses (T word, else the active tool, else tool 0)."""
        if "T" in p.params:
            t = p.params["T"]
            if t is None or t < 0 or t != int(t):
                return None
            return int(t)
        tool = self._tool
        return tool if tool is not None and tool >= 0 else 0

    def _select_tool(self, new: int | None) -> None:
        old = self._tool
        if new == old:
            return
        # retraction is a property of each extruder's filament; an unknown tool is the one the first
        # T names (the stream simply had not said which extruder was active)
        if old is not None:
            self._retr_tools[old] = self._retr
            self._fwr_tools[old] = self._fwr
            self._retr = self._retr_tools.pop(new, 0.0)
            self._fwr = self._fwr_tools.pop(new, False)
        self._tool = new
        if self.flavour == "klipper" and old is not None and new is not None and new >= 0:
            # ACTIVATE_EXTRUDER (what T<n> macros call): gcode_move._handle_activate_extruder resets
            # extrude_factor to 1 and rebases E so the logical E of the new extruder is 0
            self._e = 0.0
            self._flow = {new: 100.0}  # Klipper has one extrude_factor, now 1.0


def _axis_value(p: ParsedLine, letter: str, scale: float):
    """(value in mm or None, bad) for one axis word of a move or G92."""
    params = p.params
    if letter not in params:
        return None, False
    v = params[letter]
    if v is None:
        return None, True
    return v * scale, False


# ---------------------------------------------------------------------- handlers (shared)
# Each handler returns True when the line had a word it could not read.


def _h_move(t: StateTracker, p: ParsedLine) -> bool:
    s = t._scale
    x, bx = _axis_value(p, "X", s)
    y, by = _axis_value(p, "Y", s)
    z, bz = _axis_value(p, "Z", s)
    e, be = _axis_value(p, "E", s)
    f, bf = _axis_value(p, "F", s)
    arc = p.command in ("G2", "G3")
    planar = (
        x is not None or y is not None or (arc and ("I" in p.params or "J" in p.params or "R" in p.params))
    )
    rel = t._rel
    if x is not None:
        t._x = t._x + x if rel else x
    if y is not None:
        t._y = t._y + y if rel else y
    if z is not None:
        t._z = t._z + z if rel else z
    if f is not None and f > 0.0:
        t._f = f
    if e is not None:
        if t._erel:
            de = e
            t._e += e
        else:
            de = e - t._e
            t._e = e
        if de > 0.0:
            r = t._retr
            if r:
                r -= de
                t._retr = r if r > 0.0 else 0.0
            if planar:
                t._deposit()
        elif de < 0.0:
            t._retr -= de
        elif de != de and e > 0.0 and planar:
            t._deposit()
    return bx or by or bz or be or bf


def _h_g92(t: StateTracker, p: ParsedLine) -> bool:
    params = p.params
    bad = False
    s = t._scale
    for letter in "XYZE":
        v, b = _axis_value(p, letter, s)
        bad = bad or b
        if v is None:
            continue
        if letter == "X":
            t._ox = t._x + t._ox - v
            t._x = v
        elif letter == "Y":
            t._oy = t._y + t._oy - v
            t._y = v
        elif letter == "Z":
            t._oz = t._z + t._oz - v
            t._z = v
        else:
            # E has no frame that matters: an unknown E counts as 0 so the offset stays a number
            cur = t._e if t._e == t._e else 0.0
            t._oe = cur + t._oe - v
            t._e = v
    if t.flavour == "klipper" and not any(a in params for a in "XYZE"):
        # klippy cmd_G92: no axis given -> base_position = last_position, all four read 0
        t._ox += t._x
        t._oy += t._y
        t._oz += t._z
        t._oe += t._e if t._e == t._e else 0.0
        t._x = t._y = t._z = t._e = 0.0
    return bad


def _h_g92_1(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin G92.1 (CNC_COORDINATE_SYSTEMS): zero the XYZ workspace shift
    t._x += t._ox
    t._y += t._oy
    t._z += t._oz
    t._ox = t._oy = t._oz = 0.0
    return False


def _h_g28(t: StateTracker, p: ParsedLine) -> bool:
    axes = [a for a in "XYZ" if a in p.params] or ["X", "Y", "Z"]
    kl = t.flavour == "klipper"
    for a in axes:
        i = "XYZ".index(a)
        # after homing the G92 shift is gone (Marlin set_axis_is_at_home: position_shift = 0;
        # Klipper _handle_home_rails_end: base_position = homing_position; RRF and Prusa redefine
        # the machine position itself)
        off = t._khome[i] if kl else 0.0
        pos = t._home[i] - off
        if i == 0:
            t._ox, t._x = off, pos
        elif i == 1:
            t._oy, t._y = off, pos
        else:
            t._oz, t._z = off, pos
        t._homed.add(a)
    if t.flavour == "prusa" and not any(a in p.params for a in "XYZW"):
        # Prusa-Firmware: a bare G28 also runs G80 mesh bed levelling
        t._probed()
    return False


def _h_probe(t: StateTracker, p: ParsedLine) -> bool:
    t._probed()
    return False


def _h_g90(t: StateTracker, p: ParsedLine) -> bool:
    if t.flavour == "marlin":
        t._set_modes(False, False)  # set_relative_mode(false) clears the E bits too
    else:
        t._set_modes(False)
    return False


def _h_g91(t: StateTracker, p: ParsedLine) -> bool:
    if t.flavour == "marlin":
        t._set_modes(True, True)
    else:
        t._set_modes(True)
    return False


def _h_m82(t: StateTracker, p: ParsedLine) -> bool:
    t._set_modes(ebit=False)
    return False


def _h_m83(t: StateTracker, p: ParsedLine) -> bool:
    t._set_modes(ebit=True)
    return False


def _h_g20(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin (INCH_MODE_SUPPORT) and RRF (GCodes2 case 20: UseInches) scale X/Y/Z/E and F by 25.4.
    # Klipper raises "Machine does not support G20"; Prusa-Firmware has no G20 at all.
    if t.flavour in ("marlin", "reprapfirmware"):
        t._set_scale(_INCH)
    return False


def _h_g21(t: StateTracker, p: ParsedLine) -> bool:
    t._set_scale(1.0)
    return False


def _h_fw_retract(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin FWRETRACT / Prusa retract(): a second G10 while retracted does nothing
    t._fwr = True
    t._uses_fwr = True
    return False


def _h_fw_recover(t: StateTracker, p: ParsedLine) -> bool:
    t._fwr = False
    t._uses_fwr = True
    return False


def _h_tool(t: StateTracker, p: ParsedLine) -> bool:
    v = p.params.get("T")
    if v is None:
        if p.malformed:
            return True
        t._select_tool(None)  # Prusa's Tx/Tc/T?: the firmware asks which filament to use
        return False
    if t._tools is not None and v >= t._tools:
        return False  # OctoPrint never sends it (comm.py _validate_tool)
    t._select_tool(int(v))
    return False


def _temp_value(p: ParsedLine, order: str, default=None):
    """First of the letters in `order` that carries a number; `default` if none is given."""
    params = p.params
    bad = False
    for letter in order:
        if letter in params:
            v = params[letter]
            if v is None:
                bad = True
                continue
            return v, bad
    return default, bad


def _set_hotend(t: StateTracker, p: ParsedLine, order: str, default=None, standby=False) -> bool:
    temp, bad = _temp_value(p, order, default)
    if temp is None:
        return bad
    tool = _hotend_index(t, p)
    if tool is None:
        return True
    t._temps[tool] = temp
    if standby:
        t._standby[tool] = temp
    return bad


def _hotend_index(t: StateTracker, p: ParsedLine) -> int | None:
    if t.flavour == "prusa":
        return 0  # one hotend; T on an MMU names a filament slot, not a heater
    return t._heater_tool(p)


def _h_m104(t: StateTracker, p: ParsedLine) -> bool:
    return _set_hotend(t, p, "S")  # Marlin M104: S only (M104_M109.cpp)


def _h_m109(t: StateTracker, p: ParsedLine) -> bool:
    return _set_hotend(t, p, "SR")  # Marlin/Prusa M109: S, else R


def _h_m140(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S")
    if v is not None:
        t._bed = v
    return bad


def _h_m190(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "SR")
    if v is not None:
        t._bed = v
    return bad


def _h_m141(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S")
    if v is not None:
        t._chamber = v
    return bad


def _h_m191(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "SR")
    if v is not None:
        t._chamber = v
    return bad


def _clamp_fan(v: float) -> float:
    return 0.0 if v < 0.0 else 255.0 if v > 255.0 else v


def _fan_index(p: ParsedLine):
    v = p.params.get("P")
    if "P" not in p.params:
        return 0, False
    if v is None or v < 0 or v != int(v):
        return None, True
    return int(v), False


def _h_m106(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin M106_M107.cpp: P index (we use 0 without P; Marlin picks the active extruder's fan when
    # it has several), S defaults to 255, clamped to 0..255
    idx, bad = _fan_index(p)
    if idx is None:
        return True
    v, b = _temp_value(p, "S", 255.0)
    t._fans[idx] = _clamp_fan(v)
    return bad or b


def _h_m107(t: StateTracker, p: ParsedLine) -> bool:
    idx, bad = _fan_index(p)
    if idx is None:
        return True
    t._fans[idx] = 0.0
    return bad


def _h_m220_marlin(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin 2.1 M220.cpp: now = factor; R restores the backup; B backs up `now`; then S sets
    params = p.params
    now = t._ffactor
    if "R" in params:
        t._ffactor = t._ffbackup
    if "B" in params:
        t._ffbackup = now
    v, bad = _temp_value(p, "S")
    if v is not None:
        t._ffactor = v
    return bad


def _h_p_m106(t: StateTracker, p: ParsedLine) -> bool:
    # Prusa-Firmware case 106: one print fan, S (0..255) or 255 without it; P is not read
    v, bad = _temp_value(p, "S", 255.0)
    t._fans[0] = _clamp_fan(v)
    return bad


def _h_p_m107(t: StateTracker, p: ParsedLine) -> bool:
    t._fans[0] = 0.0
    return False


def _h_m220_prusa(t: StateTracker, p: ParsedLine) -> bool:
    # Prusa-Firmware Marlin_main.cpp case 220: B backs up, S sets, R restores (in that order)
    params = p.params
    if "B" in params:
        t._ffbackup = t._ffactor
    v, bad = _temp_value(p, "S")
    if v is not None:
        t._ffactor = v
    if "R" in params:
        t._ffactor = t._ffbackup
    return bad


def _flow_tool(t: StateTracker) -> int:
    tool = t._tool
    return tool if tool is not None and tool >= 0 else 0


def _h_m221_marlin(t: StateTracker, p: ParsedLine) -> bool:
    # Marlin M221.cpp: T selects the extruder (default: active), S sets the percentage
    v, bad = _temp_value(p, "S")
    if v is None:
        return bad
    tool = t._heater_tool(p)
    if tool is None:
        return True
    t._flow[tool] = v
    return bad


def _h_m221_prusa(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S")  # one extrudemultiply, no T
    if v is not None:
        t._flow[_flow_tool(t)] = v
    return bad


def _h_neutral(t: StateTracker, p: ParsedLine) -> bool:
    return False


def _h_m84(t: StateTracker, p: ParsedLine) -> bool:
    # M18/M84 with only S sets the idle timeout; otherwise steppers go off and the position can no
    # longer be trusted (Klipper's motor_off clears homing of all axes; Marlin clears axes_trusted).
    params = p.params
    if params and set(params) <= {"S"}:
        return False
    axes = [a for a in "XYZ" if a in params]
    if t.flavour == "klipper" or not params:
        axes = ["X", "Y", "Z"]
    for a in axes:
        t._homed.discard(a)
    return False


# ---------------------------------------------------------------------- Klipper specifics


def _kv(text: str) -> dict[str, str]:
    out = {}
    for part in text.split():
        k, eq, v = part.partition("=")
        if eq:
            out[k.upper()] = v
    return out


def _h_k_m104(t: StateTracker, p: ParsedLine) -> bool:
    # extruder.py cmd_M104: temp = gcmd.get_float('S', 0.) -> no S means off; R is not read
    return _set_hotend(t, p, "S", 0.0)


def _h_k_m140(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S", 0.0)  # heater_bed.py cmd_M140: S defaults to 0
    t._bed = v
    return bad


def _h_k_m106(t: StateTracker, p: ParsedLine) -> bool:
    # fan.py cmd_M106: S defaults to 255, minval 0 (a negative S is an error); no P: one part fan
    v, bad = _temp_value(p, "S", 255.0)
    if v < 0.0:
        return True
    t._fans[0] = _clamp_fan(v)
    return bad


def _h_k_m107(t: StateTracker, p: ParsedLine) -> bool:
    t._fans[0] = 0.0
    return False


def _h_k_m220(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S", 100.0)  # gcode_move cmd_M220: S defaults to 100, above 0
    if v <= 0.0:
        return True
    t._ffactor = v
    return bad


def _h_k_m221(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S", 100.0)
    if v <= 0.0:
        return True
    t._flow[_flow_tool(t)] = v
    return bad


def _h_k_set_gcode_offset(t: StateTracker, p: ParsedLine) -> bool:
    # gcode_move.cmd_SET_GCODE_OFFSET: base_position += delta; the logical position moves by -delta
    # unless MOVE=1 moves the head by delta too
    kv = _kv(p.text)
    move = read_number(kv.get("MOVE", "0")) or 0.0
    bad = False
    for i, a in enumerate("XYZE"):
        if a in kv:
            off = read_number(kv[a])
        elif a + "_ADJUST" in kv:
            adj = read_number(kv[a + "_ADJUST"])
            off = None if adj is None else adj + t._khome[i]
        else:
            continue
        if off is None:
            bad = True
            continue
        delta = off - t._khome[i]
        t._khome[i] = off
        if i == 0:
            t._ox += delta
            if not move:
                t._x -= delta
        elif i == 1:
            t._oy += delta
            if not move:
                t._y -= delta
        elif i == 2:
            t._oz += delta
            if not move:
                t._z -= delta
        else:
            t._oe += delta
            if not move:
                t._e -= delta
    return bad


def _h_k_save_state(t: StateTracker, p: ParsedLine) -> bool:
    name = _kv(p.text).get("NAME", "default").lower()
    if name not in t._saved and len(t._saved) >= MAX_SAVED_STATES:
        return False
    t._saved[name] = (
        t._rel, t._ebit, (t._ox, t._oy, t._oz, t._oe), list(t._khome),
        (t._x + t._ox, t._y + t._oy, t._z + t._oz), t._e, t._f, t._ffactor, dict(t._flow),
    )  # fmt: skip
    return False


def _h_k_restore_state(t: StateTracker, p: ParsedLine) -> bool:
    kv = _kv(p.text)
    saved = t._saved.get(kv.get("NAME", "default").lower())
    if saved is None:
        return False  # Klipper: "Unknown g-code state", nothing changes
    rel, ebit, offs, khome, machine, e, f, ffactor, flow = saved
    move = read_number(kv.get("MOVE", "0")) or 0.0
    now = (t._x + t._ox, t._y + t._oy, t._z + t._oz)
    target = machine if move else now
    t._ox, t._oy, t._oz = offs[0], offs[1], offs[2]
    t._x, t._y, t._z = target[0] - offs[0], target[1] - offs[1], target[2] - offs[2]
    # the logical E comes back to its saved value; the filament does not move
    cur_e = t._e if t._e == t._e else 0.0
    t._oe = cur_e + t._oe - (e if e == e else 0.0)
    t._e = e
    t._khome = list(khome)
    t._f = f
    t._ffactor = ffactor
    t._flow = dict(flow)
    t._set_modes(rel, ebit)
    return False


def _h_k_activate_extruder(t: StateTracker, p: ParsedLine) -> bool:
    name = _kv(p.text).get("EXTRUDER", "").lower()
    if name == "extruder":
        t._select_tool(0)
    elif name.startswith("extruder") and name[8:].isdigit():
        t._select_tool(int(name[8:]))
    else:
        return True
    return False


def _h_k_set_heater(t: StateTracker, p: ParsedLine) -> bool:
    kv = _kv(p.text)
    heater = kv.get("HEATER", "").lower()
    target = read_number(kv.get("TARGET", "0"))
    if target is None:
        return True
    if heater == "extruder":
        t._temps[0] = target
    elif heater.startswith("extruder") and heater[8:].isdigit():
        t._temps[int(heater[8:])] = target
    elif heater == "heater_bed":
        t._bed = target
    elif "chamber" in heater:
        t._chamber = target
    return False


def _h_k_set_retraction(t: StateTracker, p: ParsedLine) -> bool:
    t._fwr = False  # firmware_retraction.cmd_SET_RETRACTION resets is_retracted
    return False


# ---------------------------------------------------------------------- RepRapFirmware specifics


def _rrf_tool(t: StateTracker, p: ParsedLine):
    if "P" in p.params:
        v = p.params["P"]
        if v is None or v < 0 or v != int(v):
            return None
        return int(v)
    return t._tool if t._tool is not None and t._tool >= 0 else None


def _h_r_g10(t: StateTracker, p: ParsedLine) -> bool:
    # GCodes2.cpp case 10: with L -> offsets/workplaces; with P, R, S or an axis word -> tool
    # offsets and temperatures (SetOrReportOffsets); only a bare G10 retracts
    params = p.params
    if "L" in params:
        return False
    if not any(k in params for k in "PRSXYZUVWABC"):
        return _h_fw_retract(t, p)
    tool = _rrf_tool(t, p)
    if tool is None:
        return True
    bad = False
    if "R" in params:
        if params["R"] is None:
            bad = True
        else:
            t._standby[tool] = params["R"]
    if "S" in params:
        if params["S"] is None:
            bad = True
        else:
            t._temps[tool] = params["S"]
    return bad


def _h_r_m568(t: StateTracker, p: ParsedLine) -> bool:
    # M568 is G10's temperature form without the retraction meaning
    if not any(k in p.params for k in "RS"):
        return False
    return _h_r_g10(t, p)


def _h_r_m104(t: StateTracker, p: ParsedLine) -> bool:
    # GCodes2.cpp case 104/109: R wins over S; sets the tool's active and standby temperatures
    return _set_hotend(t, p, "RS", standby=True)


def _h_r_m109(t: StateTracker, p: ParsedLine) -> bool:
    bad = _set_hotend(t, p, "RS", standby=True)
    if t._tool == -1 and ("R" in p.params or "S" in p.params):
        tool = t._heater_tool(p)  # M109 with no tool selected selects the tool it heats
        if tool is not None:
            t._select_tool(tool)
    return bad


def _h_r_m190(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "RS")
    if v is not None:
        t._bed = v
    return bad


def _h_r_m191(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "RS")
    if v is not None:
        t._chamber = v
    return bad


def _h_r_m106(t: StateTracker, p: ParsedLine) -> bool:
    # GCodes2.cpp case 106: only S changes the speed; GetPwmValue: S <= 1.0 is a fraction, larger
    # values are /255, constrained to 0..1. Without P the current tool's fan (fan 0 by default).
    params = p.params
    if "S" not in params:
        return False
    idx, bad = _fan_index(p)
    if idx is None:
        return True
    v = params["S"]
    if v is None:
        return True
    frac = v if v <= 1.0 else v / 255.0
    frac = 0.0 if frac < 0.0 else 1.0 if frac > 1.0 else frac
    t._fans[idx] = frac * 255.0
    return bad


def _h_r_m220(t: StateTracker, p: ParsedLine) -> bool:
    v, bad = _temp_value(p, "S")
    if v is None:
        return bad
    if v < 1.0:  # "Invalid speed factor" below 1 %
        return True
    t._ffactor = v
    return bad


def _h_r_m221(t: StateTracker, p: ParsedLine) -> bool:
    # GCodes2.cpp case 221: D selects the extruder drive, else the current tool's; S >= 1 %
    params = p.params
    v, bad = _temp_value(p, "S")
    if v is None:
        return bad
    if v < 1.0:
        return True
    if "D" in params:
        d = params["D"]
        if d is None or d < 0 or d != int(d):
            return True
        key = int(d)
    else:
        if t._tool is None or t._tool < 0:
            return False  # "No tool selected"
        key = t._tool
    t._flow[key] = v
    return bad


def _h_r_g30(t: StateTracker, p: ParsedLine) -> bool:
    # GCodes6.cpp ExecuteG30: without P (and S not -1/-2/-3) it probes here and resets the Z origin,
    # which homes Z; with P it probes at a point
    params = p.params
    t._probed()
    s = params.get("S")
    if "P" not in params and (s is None or s >= 0 or s <= -4):
        t._homed.add("Z")
        t._oz = 0.0
    return False


# ---------------------------------------------------------------------- dispatch tables

_COMMON: dict[str, Callable[[StateTracker, ParsedLine], bool]] = {
    "G0": _h_move, "G1": _h_move, "G2": _h_move, "G3": _h_move,
    "G10": _h_fw_retract, "G11": _h_fw_recover,
    "G20": _h_g20, "G21": _h_g21, "G28": _h_g28,
    "G90": _h_g90, "G91": _h_g91, "G92": _h_g92,
    "G30": _h_probe, "G31": _h_neutral, "G32": _h_probe,
    "M82": _h_m82, "M83": _h_m83,
    "M104": _h_m104, "M109": _h_m109, "M140": _h_m140, "M190": _h_m190,
    "M141": _h_m141, "M191": _h_m191,
    "M106": _h_m106, "M107": _h_m107,
    "M220": _h_m220_marlin, "M221": _h_m221_marlin,
    "M18": _h_m84, "M84": _h_m84,
    "T": _h_tool,
}  # fmt: skip
for _c in _PROBE_COMMANDS:
    _COMMON[_c] = _h_probe

_MARLIN = dict(_COMMON, **{"G92.1": _h_g92_1})
_PRUSA = dict(
    _COMMON,
    **{"G80": _h_probe, "M106": _h_p_m106, "M107": _h_p_m107, "M220": _h_m220_prusa, "M221": _h_m221_prusa},
)
_KLIPPER = dict(
    _COMMON,
    **{
        "M104": _h_k_m104, "M109": _h_k_m104, "M140": _h_k_m140, "M190": _h_k_m140,
        "M106": _h_k_m106, "M107": _h_k_m107, "M220": _h_k_m220, "M221": _h_k_m221,
        "SET_GCODE_OFFSET": _h_k_set_gcode_offset,
        "SAVE_GCODE_STATE": _h_k_save_state, "RESTORE_GCODE_STATE": _h_k_restore_state,
        "ACTIVATE_EXTRUDER": _h_k_activate_extruder,
        "SET_HEATER_TEMPERATURE": _h_k_set_heater, "SET_RETRACTION": _h_k_set_retraction,
    },
)  # fmt: skip
_RRF = dict(
    _COMMON,
    **{
        "G10": _h_r_g10, "M568": _h_r_m568, "M104": _h_r_m104, "M109": _h_r_m109,
        "M190": _h_r_m190, "M191": _h_r_m191, "M106": _h_r_m106,
        "M220": _h_r_m220, "M221": _h_r_m221, "G30": _h_r_g30,
    },
)  # fmt: skip

_HANDLERS = {MARLIN: _MARLIN, KLIPPER: _KLIPPER, RRF: _RRF, PRUSA: _PRUSA}

# What the tracker acts on, from the tables above: a command with a handler that is not neutral, and the
# probing words (the head ends up somewhere unknown). Spelled as parse_line names them: "G1", "G92.1",
# "T" (any tool), "SET_GCODE_OFFSET". Anything else changes nothing but `lines` (and `macros`).
_MODELLED = {
    flavour: frozenset(c for c, handler in table.items() if handler is not _h_neutral) | _PROBE_WORDS
    for flavour, table in _HANDLERS.items()
}
MODELLED_COMMANDS = frozenset().union(*_MODELLED.values())  # for any flavour
# Per flavour, the commands that move the head where the stream does not say (probing, levelling,
# calibration; RRF's G30 only probes with P, but moves either way): from the same tables.
PROBING_COMMANDS = {
    flavour: frozenset(c for c, handler in table.items() if handler in (_h_probe, _h_r_g30)) | _PROBE_WORDS
    for flavour, table in _HANDLERS.items()
}


def modelled_commands(flavour: str | None = None) -> frozenset[str]:
    """The commands whose lines the tracker acts on for `flavour` (None: for any flavour), e.g. the
    commands from outside a print file that a caller must feed it to stay exact."""
    if flavour is None:
        return MODELLED_COMMANDS
    if flavour not in _MODELLED:
        raise ValueError(f"unknown firmware flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
    return _MODELLED[flavour]
