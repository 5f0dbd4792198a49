"""Scheduled stops: a pause, a filament change or a few lines of G-code before a planned layer.

A stop names where (`at`: a height, a layer number, the next layer, every N layers) and what (`action`).
It is resolved against the file's layers (from the checkpoint index: where the file extrudes, z-hop is
no layer) to the file line of that layer's first deposit; the queuing hook then looks for the one tag
OctoPrint gives exactly that line (`filepos:<end of the line>`), so finding it costs a set lookup and
nothing is computed per line. Pure: no OctoPrint import (docs/scheduled-stops.md).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace

from .gcode import parse_line
from .gcode.fastscan import LAYER_MATCH
from .gcode.replay import decoded_lines
from .safety import MOVES, Problem, plain_line_problem

KINDS = ("z", "layer", "next_layer", "every")
ACTIONS = ("pause", "filament_change", "gcode")
MAX_GCODE_LINES = 20
MAX_STOPS = 50  # per file and per print
MAX_MESSAGE = 200
MAX_LAYER = 1_000_000
MAX_LINE_READ = 64 * 1024  # bytes read for the target line (G-code lines are short)

# How a stop is shown ("pause at layer 26 (Z 5.00)"): the action's words
ACTION_WORDS = {"pause": "pause", "filament_change": "filament change", "gcode": "G-code"}


class StopRefused(Exception):
    """A stop that cannot be set (or found); `status` is the HTTP status the API answers."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Layer:
    number: int  # from 1
    z: float
    pos: int  # where the line of its first deposit starts (OctoPrint's count)
    offset: int  # the same, in bytes


def layers_from_index(part_layers) -> tuple:
    """Layer objects, numbered from 1, from the part's (z, pos, offset) layers (IndexStore.layers)."""
    return tuple(Layer(i + 1, float(z), int(pos), int(off)) for i, (z, pos, off) in enumerate(part_layers))


@dataclass(frozen=True)
class Stop:
    id: str
    kind: str
    value: float | int | None  # mm for z, the layer for layer, N for every
    action: str = "pause"
    gcode: tuple = ()
    message: str | None = None
    path: str | None = None
    scope: str = "print"  # "file": kept with the file; "print": this print only
    # the next occurrence, once resolved
    layer: Layer | None = None
    end: int | None = None  # where its first deposit line ends: OctoPrint's filepos tag of that line
    fired: int = 0

    @property
    def at(self) -> dict:
        if self.kind == "next_layer":
            return {"next_layer": True}
        return {self.kind: self.value}

    def stored(self) -> dict:
        """What is kept in the file's metadata."""
        return {"id": self.id, "at": self.at, "action": self.action, "gcode": list(self.gcode), "message": self.message}

    def describe(self) -> str:
        """"pause at layer 26 (Z 5)", for reasons and logs."""
        where = f"layer {self.layer.number} (Z{self.layer.z:g})" if self.layer else _at_text(self.kind, self.value)
        return f"{ACTION_WORDS[self.action]} at {where}"

    def public(self, current: int | None = None, eta: float | None = None) -> dict:
        layer = self.layer
        return {
            "id": self.id,
            "at": self.at,
            "action": self.action,
            "gcode": list(self.gcode),
            "message": self.message,
            "path": self.path,
            "scope": self.scope,
            "layer": layer.number if layer else None,
            "z": layer.z if layer else None,
            "filepos": layer.pos if layer else None,
            "layers_away": None if layer is None or current is None else max(0, layer.number - current),
            "eta": eta,
            "fired": self.fired,
        }


def _at_text(kind: str, value) -> str:
    if kind == "z":
        return f"Z{value:g}"
    if kind == "layer":
        return f"layer {value}"
    if kind == "every":
        return f"every {value} layers"
    return "the next layer"


# ------------------------------------------------------------------------------------------- requests


def new_id() -> str:
    return secrets.token_hex(4)


def parse(data: dict, *, path: str | None, scope: str, stop_id: str | None = None) -> Stop:
    """A stop from a request (or the file's metadata): ValueError with a clear message otherwise."""
    at = data.get("at")
    if not isinstance(at, dict) or len(at) != 1:
        raise ValueError("'at' must be one of {\"z\": mm}, {\"layer\": n}, {\"next_layer\": true}, {\"every\": n}")
    (kind, value), = at.items()
    if kind not in KINDS:
        raise ValueError(f"'at' must name one of: {', '.join(KINDS)} (not {kind!r})")
    if kind == "z":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError("'at.z' must be a height in mm (0 or more)")
        value = float(value)
    elif kind == "next_layer":
        if value is not True:
            raise ValueError("'at.next_layer' must be true")
        if scope == "file":
            raise ValueError("'next_layer' applies to the running print only (leave out 'path')")
        value = None
    else:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LAYER:
            raise ValueError(f"'at.{kind}' must be a whole number from 1 to {MAX_LAYER}")
    action = data.get("action", "pause")
    if action not in ACTIONS:
        raise ValueError(f"'action' must be one of: {', '.join(ACTIONS)}")
    gcode = data.get("gcode")
    if action == "gcode":
        gcode = check_gcode(gcode)
    elif gcode not in (None, [], ()):
        raise ValueError("'gcode' goes with the action 'gcode' only")
    else:
        gcode = ()
    message = data.get("message")
    if message is not None:
        if not isinstance(message, str):
            raise ValueError("'message' must be text")
        message = message.strip()
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"'message' is longer than {MAX_MESSAGE} characters")
        message = message or None
    return Stop(stop_id or new_id(), kind, value, action, gcode, message, path, scope)


def check_gcode(lines) -> tuple:
    """The G-code of a stop as plain lines (blank ones dropped): ValueError naming the first refused line.
    Where the lines move the head is checked against the printer's state when the stop is reached."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    if not isinstance(lines, (list, tuple)) or not 0 < len(lines) <= MAX_GCODE_LINES * 4:
        raise ValueError(f"'gcode' must be a list of 1 to {MAX_GCODE_LINES} lines")
    out = []
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            raise ValueError(f"'gcode' line {index + 1} is not text")
        text = line.strip()
        if not text:
            continue
        reason = plain_line_problem(text)
        if reason:
            raise ValueError(f"'gcode' refused: {Problem(index, text, reason)}")
        out.append(text)
    if not 0 < len(out) <= MAX_GCODE_LINES:
        raise ValueError(f"'gcode' must be a list of 1 to {MAX_GCODE_LINES} lines")
    return tuple(out)


def from_stored(items, path: str) -> list:
    """The stops kept with a file; a damaged entry is left out (never a reason to fail a print)."""
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        try:
            out.append(parse(item, path=path, scope="file", stop_id=item["id"][:32]))
        except ValueError:
            continue
    return out


# ------------------------------------------------------------------------------------------- resolving


def current_layer(layers: tuple, read_pos: int | None) -> int:
    """How many layers OctoPrint has started reading: 0 before the first deposit."""
    if read_pos is None:
        return 0
    count = 0
    for layer in layers:
        if layer.pos >= read_pos:
            break
        count += 1
    return count


def resolve(stop: Stop, layers: tuple, read_pos: int | None, line_end) -> Stop:
    """The stop with its next occurrence. `read_pos`: where OctoPrint reads the running print (None for a
    file not printing); `line_end(layer) -> end`: where the line of the layer's first deposit ends.
    StopRefused (400: the file has no such layer; 409: the print is past it)."""
    if not layers:
        raise StopRefused("the file has no layers (nothing in it extrudes)", 400)
    started = current_layer(layers, read_pos)
    if stop.kind == "z":
        layer = next((la for la in layers if la.z >= stop.value - LAYER_MATCH), None)
        if layer is None:
            raise StopRefused(f"the file has no layer at or above Z{stop.value:g} (its top layer is at Z{max(la.z for la in layers):g})", 400)
    elif stop.kind == "layer":
        if stop.value > len(layers):
            raise StopRefused(f"the file has {len(layers)} layers, not {stop.value}", 400)
        layer = layers[stop.value - 1]
    elif stop.kind == "next_layer":
        if started >= len(layers):
            raise StopRefused("the print is in its last layer: there is no next one")
        layer = layers[started]
    else:
        first = max(started, 1) + stop.value  # after every N layers: before layer N+1, 2N+1...
        if first > len(layers):
            raise StopRefused(f"fewer than {stop.value} layers are left to print ({len(layers)} in all)")
        layer = layers[first - 1]
    if read_pos is not None and layer.pos < read_pos:
        raise StopRefused(
            f"layer {layer.number} (Z{layer.z:g}) has started already: the print is at layer {started}"
        )
    return replace(stop, layer=layer, end=line_end(layer))


def line_end(disk: str, layer: Layer) -> int:
    """Where OctoPrint's count is after the line of the layer's first deposit: its `filepos` tag."""
    with open(disk, "rb") as fh:
        fh.seek(layer.offset)
        raw = fh.read(MAX_LINE_READ)
    lines = raw.splitlines(True)
    if not lines:
        raise StopRefused("the file changed: its layer is not where the index says", 409)
    first = lines[0]
    if not first.endswith((b"\n", b"\r")) and len(lines) == 1 and len(raw) == MAX_LINE_READ:
        raise StopRefused("the layer's first line is too long to be G-code", 409)
    text, counted = decoded_lines(first)[0]
    if parse_line(text).command not in MOVES:
        raise StopRefused("the file changed: its layer does not start where the index says", 409)
    return layer.pos + counted


# ------------------------------------------------------------------------------------------- the print


@dataclass
class Schedule:
    """The running print's stops, resolved against its file. Not thread-safe: the controller's lock."""

    path: str
    disk: str
    layers: tuple
    stops: list = field(default_factory=list)

    def add(self, stop: Stop, read_pos: int | None) -> Stop:
        if any(s.id == stop.id for s in self.stops):
            raise StopRefused(f"a stop {stop.id} is scheduled already")
        if len(self.stops) >= MAX_STOPS:
            raise StopRefused(f"at most {MAX_STOPS} stops per print")
        resolved = resolve(replace(stop, path=self.path), self.layers, read_pos, lambda la: line_end(self.disk, la))
        self.stops.append(resolved)
        self.stops.sort(key=lambda s: s.end)
        return resolved

    def remove(self, stop_id: str) -> Stop | None:
        for stop in self.stops:
            if stop.id == stop_id:
                self.stops.remove(stop)
                return stop
        return None

    def target(self) -> int | None:
        """The end position of the next stop's line (the hook's tag), or None."""
        return self.stops[0].end if self.stops else None

    def reached(self, end: int) -> list:
        """The stops whose line ends at `end` (it is being queued now), fired: one that repeats moves to
        its next occurrence, the others are gone."""
        due = [s for s in self.stops if s.end == end]
        fired = [replace(s, fired=s.fired + 1) for s in due]
        for stop, counted in zip(due, fired):
            self._move_on(stop, counted.fired)
        return fired

    def skip_passed(self, read_pos: int) -> list:
        """Stops whose line OctoPrint read without the hook firing (a pause of another kind held exactly
        there, a print started from an offset): moved on or gone. Returns those skipped."""
        passed = [s for s in self.stops if s.end < read_pos]  # the line after it was read too
        for stop in passed:
            self._move_on(stop, stop.fired, read_pos)
        return passed

    def _move_on(self, stop: Stop, fired: int, read_pos: int | None = None) -> None:
        """`stop` is done here: gone, or (every N) at its next layer not read yet, having fired `fired` times."""
        self.stops.remove(stop)
        if stop.kind != "every":
            return
        number = stop.layer.number + stop.value
        if read_pos is not None:
            while number <= len(self.layers) and self.layers[number - 1].pos < read_pos:
                number += stop.value
        if number > len(self.layers):
            return
        layer = self.layers[number - 1]
        try:
            nxt = replace(stop, layer=layer, end=line_end(self.disk, layer), fired=fired)
        except (OSError, StopRefused):
            return
        self.stops.append(nxt)
        self.stops.sort(key=lambda s: s.end)

    def public(self, read_pos: int | None, time_left: float | None, size: int | None) -> list:
        current = current_layer(self.layers, read_pos)
        out = []
        for stop in self.stops:
            eta = None
            if time_left is not None and read_pos is not None and size and size > read_pos:
                ahead = max(0, stop.layer.pos - read_pos)
                eta = round(time_left * ahead / (size - read_pos), 1)
            out.append(stop.public(current, eta))
        return out
