"""The one safety check every line SafePause sends goes through: built in, templated or typed.

`SafetyCheck` follows the lines with the G-code tracker, from the printer's state where they start, and
refuses a line that
* is not one plain command: longer than MAX_LINE_CHARS, a control character (a second line, a NUL), an
  OctoPrint host command (``@pause``, ``@cancel``...: they act on OctoPrint's job, which SafePause holds);
* moves outside the printer profile's volume (machine coordinates: G92 offsets and relative moves are
  understood as the tracker understands them), except back to where the print itself stood;
* travels in X/Y below the highest printed point, or with the nozzle height unknown over a print;
* homes Z, probes or levels over a print, or leaves the position unknown;
* for the user's own lines in the middle of SafePause's (templates): shifts the coordinate frame (G92
  X/Y/Z, offsets) or runs a firmware macro, whose moves nothing can check.
Pure: no OctoPrint import.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gcode import StateTracker, parse_line
from .sequences import Volume, resume_parts

MAX_LINE_CHARS = 96  # Marlin's MAX_CMD_SIZE: a longer command is cut by the firmware
EPS = 1e-6

MOVES = frozenset(["G0", "G1", "G2", "G3"])
_HOMING = "G28"


@dataclass(frozen=True)
class Problem:
    """A refused line: its index in the lines checked, its text and why."""

    index: int
    line: str
    reason: str

    def __str__(self) -> str:
        shown = self.line if len(self.line) <= 40 else self.line[:37] + "..."
        return f"line {self.index + 1} {shown!r}: {self.reason}"


def plain_line_problem(line: str) -> str | None:
    """Why `line` is not one plain command, or None."""
    if len(line) > MAX_LINE_CHARS:
        return f"longer than {MAX_LINE_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in line):
        return "contains a control character (one command per line, no NUL)"
    if line.lstrip().startswith("@"):
        return "OctoPrint host commands (@...) are not sent: they act on the job SafePause holds"
    return None


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def seeded_tracker(state, flavour: str | None = None, *, z: float | None = None) -> StateTracker:
    """A tracker that starts where `state` is (position, offsets, modes, units, tool), using only its
    public G-code interface: homing to the machine position, then G92 to the logical one. `z` replaces
    the state's logical Z (e.g. the lowest height a nozzle may be at)."""
    flavour = flavour or getattr(state, "flavour", None) or "marlin"
    if state is None:
        return StateTracker(flavour)
    offsets = dict(state.offsets or {})
    logical = {"X": state.x, "Y": state.y, "Z": state.z if z is None else z}
    machine = {
        axis: value + offsets[axis]
        for axis, value in logical.items()
        if value is not None and offsets.get(axis) is not None
    }
    tracker = StateTracker(flavour, home_position=machine)
    if machine:
        tracker.feed("G28 " + " ".join(machine))
        tracker.feed("G92 " + " ".join(f"{a}{_num(logical[a])}" for a in machine))
    if state.relative_xyz is not None:
        tracker.feed("G91" if state.relative_xyz else "G90")
    if state.relative_e is not None:
        tracker.feed("M83" if state.relative_e else "M82")
    if state.e is not None:
        tracker.feed(f"G92 E{_num(state.e)}")
    if state.tool is not None and state.tool >= 0:
        tracker.feed(f"T{state.tool}")
    if state.units == "inch":
        tracker.feed("G20")
    return tracker


def _machine(state) -> tuple:
    offsets = state.offsets
    out = []
    for axis, value in (("X", state.x), ("Y", state.y), ("Z", state.z)):
        offset = offsets.get(axis)
        out.append(None if value is None or offset is None else value + offset)
    return tuple(out)


def _frame(state) -> tuple:
    return tuple(state.offsets.get(axis) for axis in "XYZ")


class SafetyCheck:
    """Follows a sequence from the state it starts in; `check` refuses what is unsafe (see the module).

    `max_z`: the highest printed point in machine coordinates (default: the state's); `z`: the logical
    Z to start from instead of the state's (the lowest the nozzle may be at)."""

    def __init__(self, volume: Volume, state=None, *, flavour: str | None = None, max_z=None, z=None):
        self.volume = volume
        self._tracker = seeded_tracker(state, flavour, z=z)
        start = self._tracker.state
        if max_z is None and state is not None and state.max_z is not None:
            offset = (state.offsets or {}).get("Z")
            max_z = state.max_z + offset if offset is not None else None
        self.max_z = max_z
        self._home = _machine(start)  # where the print itself stood: always reachable

    @property
    def state(self):
        """Where the lines checked (and committed) so far leave the printer."""
        return self._tracker.state

    def check(self, lines, *, user: bool = False, commit: bool = True) -> list[Problem]:
        """The problems of `lines`, in order (empty: all pass). With `commit`, the state moves past
        the lines only when all pass. `user`: the user's own lines inside SafePause's sequence."""
        tracker = StateTracker.restore(self._tracker.export())
        problems = []
        for index, raw in enumerate(lines):
            line = raw.strip() if isinstance(raw, str) else ""
            if not isinstance(raw, str):
                problems.append(Problem(index, repr(raw), "not a line of text"))
                continue
            if not line:
                continue
            reason = plain_line_problem(line) or self._motion_problem(tracker, line, user)
            if reason:
                problems.append(Problem(index, line, reason))
        if commit and not problems:
            self._tracker = tracker
        return problems

    def _motion_problem(self, tracker: StateTracker, line: str, user: bool) -> str | None:
        before = tracker.state
        parsed = parse_line(line)
        tracker.feed(line)
        after = tracker.state
        command, params = parsed.command, parsed.params
        if command is None:
            return None
        if user and _frame(after) != _frame(before):
            return "changes the coordinate frame (G92 X/Y/Z, offsets): not allowed in your own G-code"
        if user and len(after.macros) > len(before.macros):
            return "runs a firmware macro, whose moves cannot be checked"
        printed = self.max_z is not None
        homing = command == _HOMING
        homes_z = homing and ("Z" in params or not any(a in params for a in "XY"))
        if homes_z and printed:
            return "homes Z onto the print"
        old, new = _machine(before), _machine(after)
        for axis, was, now in zip("XYZ", old, new):
            if was is not None and now is None and not (homing and axis in "XY"):
                return f"leaves the {axis} position unknown (probing or levelling)"
        moves_xy = (command in MOVES and ("X" in params or "Y" in params)) or (homing and not homes_z)
        if moves_xy:
            problem = self._travel_problem(old[2], new, homing)
            if problem:
                return problem
        if command in MOVES and ("Z" in params) and new[2] is None:
            return "moves Z from an unknown height"
        return self._volume_problem(old, new)

    def _travel_problem(self, z_before, new, homing: bool) -> str | None:
        z = z_before if homing else new[2]
        if self.max_z is not None:
            if z is None or z_before is None:
                return "travels in X/Y with the nozzle height unknown, over a print"
            if min(z, z_before) < self.max_z - EPS:
                return (
                    f"travels in X/Y at Z{_num(min(z, z_before))}, below the top of the print "
                    f"(Z{_num(self.max_z)})"
                )
        if not homing and (new[0] is None or new[1] is None):
            return "moves in X/Y from an unknown position"
        return None

    def _volume_problem(self, old, new) -> str | None:
        v = self.volume
        limits = {"X": (v.x_min, v.x_max), "Y": (v.y_min, v.y_max), "Z": (v.z_min, v.z_max)}
        for axis, was, now, home in zip("XYZ", old, new, self._home):
            if now is None or (was is not None and abs(now - was) < EPS):
                continue
            if home is not None and abs(now - home) < EPS:
                continue  # back where the print stood
            low, high = limits[axis]
            if not low - EPS <= now <= high + EPS:
                return f"moves outside the build volume ({axis}{_num(now)}, from {_num(low)} to {_num(high)})"
        x, y = new[0], new[1]
        if v.circular and x is not None and y is not None and not v.contains(x, y):
            return f"moves outside the round bed (X{_num(x)} Y{_num(y)})"
        return None


_KEPT = (
    ("relative_xyz", "the X/Y/Z mode (G90/G91)"),
    ("relative_e", "the extruder mode (M82/M83)"),
    ("units", "the units (G20/G21)"),
    ("tool", "the active tool"),
    ("fw_retracted", "the firmware retraction (G10/G11)"),
)


def left_as_found(before, after) -> str | None:
    """Why lines sent in the middle of a print (a scheduled stop's G-code) leave the printer other than
    they found it, or None: the file's next line assumes the position, the modes, the tool and the
    filament where they were. The feedrate is put back by whoever sends them."""
    for name, label in _KEPT:
        if getattr(before, name) != getattr(after, name):
            return f"changes {label}: set it back at the end"
    for axis in ("x", "y", "z"):
        was, now = getattr(before, axis), getattr(after, axis)
        if was is not None and (now is None or abs(now - was) > 1e-4):
            return f"leaves the head away from where it was ({axis.upper()}{_num(was)}): move it back at the end"
    if _frame(before) != _frame(after):
        return "changes the coordinate frame (G92, offsets)"
    if abs(before.retracted - after.retracted) > 1e-4 or (
        before.relative_e is False and before.e is not None and (after.e is None or abs(after.e - before.e) > 1e-4)
    ):
        return "leaves the filament pushed or pulled: extrude back what you retract"
    return None


@dataclass(frozen=True)
class Checked:
    """A sequence and what the check refused in it: in SafePause's own lines (`builtin`) and in the
    user's (`user`, whose lines are then left out of `lines`)."""

    lines: list
    builtin: list
    user: list


def check_pause(state, plan, volume: Volume, user_lines=()) -> Checked:
    """The pause plan's lines, then the user's pause template after them."""
    check = SafetyCheck(volume, state, flavour=plan.flavour)
    builtin = check.check(plan.lines)
    user = check.check(list(user_lines), user=True) if user_lines else []
    lines = list(plan.lines) + ([] if user else list(user_lines))
    return Checked(lines, builtin, user)


def check_resume(state, plan, volume: Volume, settings, wait_for_heat=False, at_park=()) -> Checked:
    """The resume sequence from where the pause plan left the head, the user's lines at the park."""
    lead, back_to_park, rest = resume_parts(state, plan, volume, settings, wait_for_heat)
    check = SafetyCheck(volume, state, flavour=plan.flavour)
    check.check(plan.lines)  # already sent: only where they left the head matters
    builtin = check.check(lead)
    user = check.check(list(at_park), user=True) if at_park else []
    use = list(at_park) if at_park and not user else []
    tail = ["G90", "M83", *back_to_park, *rest] if use else rest
    builtin += [Problem(p.index + len(lead) + len(use), p.line, p.reason) for p in check.check(tail)]
    return Checked(lead + use + tail, builtin, user)
