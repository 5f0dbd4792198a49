"""An independent model of the G-code position and mode arithmetic (and the corpus it is checked on).

Why it is independent of ``octoprint_safepause.core.gcode``: it was written from Klipper's
``klippy/extras/gcode_move.py`` (commit 84104bb) and shares no code or representation with the tracker.

* It tokenises like ``klippy/gcode.py`` (``args_r`` regex split of the upper-cased line, a dict of
  string parameters), where the tracker uses ``str.split`` and its own word scanner.
* It keeps Klipper's three vectors: ``last`` (machine position), ``base`` (G92 origin) and ``homing``
  (SET_GCODE_OFFSET); the logical position is ``last - base``. The tracker stores logical positions
  and offsets directly, so every G92, G28 and relative move goes through different arithmetic.
* The firmware differences are data (which modal flags each of G90/G91/M82/M83 writes, and how the E
  mode is derived), not code paths.

It models only what the corpus needs for a line-by-line check: X/Y/Z/E/F, the motion modes, units,
G92, homing, probing, tools, slicer retraction and the highest deposited Z.
"""

from __future__ import annotations

import math
import re

from ..corpus import GCODE_DIR, corpus_files

NAN = float("nan")

__all__ = ["GCODE_DIR", "corpus_files", "read_lines", "KlipperStyleModel"]


def read_lines(path):
    """The lines exactly as OctoPrint's reader yields them."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return fh.readlines()


# --------------------------------------------------------------------------- the model

ARGS_RE = re.compile(r"([A-Z_]+|[A-Z*])")

# which modal flag each command writes: (relative coordinates, relative extrusion)
MODE_WRITES = {
    "marlin": {"G90": (False, False), "G91": (True, True), "M82": (None, False), "M83": (None, True)},
    "klipper": {"G90": (False, None), "G91": (True, None), "M82": (None, False), "M83": (None, True)},
    "reprapfirmware": {"G90": (False, None), "G91": (True, None), "M82": (None, False), "M83": (None, True)},
    "prusa": {"G90": (False, None), "G91": (True, None), "M82": (None, False), "M83": (None, True)},
}
E_MODE_IS_OR = {"klipper"}  # gcode_move.cmd_G1: relative if not absolute_coord or not absolute_extrude
INCHES = {"marlin", "reprapfirmware"}
PROBES = {
    "G29",
    "G30",
    "G32",
    "G33",
    "G34",
    "M48",
    "BED_MESH_CALIBRATE",
    "QUAD_GANTRY_LEVEL",
    "Z_TILT_ADJUST",
}


def _num(text):
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class KlipperStyleModel:
    def __init__(self, flavour):
        self.flavour = flavour
        self.coord_rel = None
        self.extr_rel = None
        self.last = [NAN, NAN, NAN, NAN]
        self.base = [0.0, 0.0, 0.0, 0.0]
        self.homing = [0.0, 0.0, 0.0, 0.0]
        self.speed = NAN
        self.inch = False
        self.tool = None
        self.retract = {}
        self.max_machine_z = None
        self.layer_machine_z = None
        # G92 on an unknown axis makes the logical value known but not where the machine is
        self.frame_ok = [True, True, True]

    # ---- derived
    def e_relative(self):
        if self.flavour in E_MODE_IS_OR:
            if self.coord_rel or self.extr_rel:
                return True
            if self.coord_rel is False and self.extr_rel is False:
                return False
            return None
        return self.extr_rel

    def position(self):
        return [None if (lp - bp) != (lp - bp) else lp - bp for lp, bp in zip(self.last, self.base)]

    def max_z(self):
        if self.max_machine_z is None or not self.frame_ok[2]:
            return None
        return self.max_machine_z - self.base[2]

    def retracted(self):
        return self.retract.get(self.tool, 0.0)

    # ---- parsing, klippy/gcode.py style
    def feed(self, line):
        line = line.strip()
        cpos = line.find(";")
        if cpos >= 0:
            line = line[:cpos]
        parts = ARGS_RE.split(line.upper())
        if len(parts) < 2:
            return
        if "".join(parts[:2]) == "N":
            parts = parts[2:]
            parts[0] = ""
        cmd = "".join(parts[:3]).strip()
        params = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}
        if not cmd:
            return
        if cmd[0] == "T" and cmd[1:].lstrip("-").isdigit():
            self.cmd_T(int(cmd[1:]))
            return
        if "." in cmd:  # G92.1 and friends: not modelled
            return
        name = "cmd_" + cmd
        if cmd in PROBES or (cmd == "G80" and self.flavour == "prusa"):
            self.last[0] = self.last[1] = self.last[2] = NAN
            if cmd == "G30" and self.flavour == "reprapfirmware" and "P" not in params:
                self.base[2] = 0.0
            return
        handler = getattr(self, name, None)
        if handler is not None:
            handler(params)
        elif cmd in MODE_WRITES[self.flavour]:
            rel, ext = MODE_WRITES[self.flavour][cmd]
            if rel is not None:
                self.coord_rel = rel
            if ext is not None:
                self.extr_rel = ext

    def _value(self, params, axis):
        if axis not in params:
            return None
        v = _num(params[axis])
        if v is None:
            return None
        return v * 25.4 if self.inch else v

    # ---- commands
    def cmd_G1(self, params):
        old_e = self.last[3]
        values = [self._value(params, a) for a in "XYZE"]
        for pos, v in enumerate(values):
            if v is None:
                continue
            relative = self.coord_rel
            if pos == 3:
                relative = self.e_relative()
            if relative:
                self.last[pos] += v
            else:
                self.last[pos] = v + self.base[pos]
        f = self._value(params, "F")
        if f is not None and f > 0:
            self.speed = f
        if values[3] is not None:
            de = self.last[3] - old_e if not self.e_relative() else values[3]
            r = self.retract.get(self.tool, 0.0)
            if de < 0:
                self.retract[self.tool] = r - de
            elif de > 0:
                self.retract[self.tool] = max(0.0, r - de)
            planar = values[0] is not None or values[1] is not None
            extruding = de > 0 or (de != de and values[3] > 0)
            if planar and extruding and self.frame_ok[2]:
                z = self.last[2]
                if z == z:
                    self.max_machine_z = z if self.max_machine_z is None else max(self.max_machine_z, z)
                self.layer_machine_z = z

    cmd_G0 = cmd_G1

    def cmd_G2(self, params):
        self.cmd_G1(params)

    cmd_G3 = cmd_G2

    def cmd_G20(self, params):
        if self.flavour in INCHES:
            self.inch = True

    def cmd_G21(self, params):
        self.inch = False

    def _rebase(self, i, v):
        if self.last[i] != self.last[i]:
            if i == 3:
                self.last[3] = self.base[3]  # the E frame is arbitrary: an unknown E counts as 0
            else:
                self.last[i], self.base[i], self.frame_ok[i] = v, 0.0, False
                return
        self.base[i] = self.last[i] - v

    def cmd_G92(self, params):
        offsets = [self._value(params, a) for a in "XYZE"]
        for i, v in enumerate(offsets):
            if v is not None:
                self._rebase(i, v)
        if self.flavour == "klipper" and not any(a in params for a in "XYZE"):
            for i in range(4):
                self._rebase(i, 0.0)

    def cmd_G28(self, params):
        axes = [i for i, a in enumerate("XYZ") if a in params] or [0, 1, 2]
        for i in axes:
            self.base[i] = self.homing[i] if self.flavour == "klipper" else 0.0
            self.last[i] = NAN
            self.frame_ok[i] = True
        if self.flavour == "prusa" and not any(a in params for a in "XYZW"):
            self.last[0] = self.last[1] = self.last[2] = NAN

    def cmd_T(self, tool):
        if tool == self.tool:
            return
        old = self.tool
        if old is None and None in self.retract:
            self.retract[tool] = self.retract.pop(None)
        self.tool = tool
        if self.flavour == "klipper" and old is not None and tool >= 0:
            self.base[3] = self.last[3] if self.last[3] == self.last[3] else self.base[3]
            if self.last[3] != self.last[3]:
                self.last[3] = self.base[3]
