"""The tracked state at a byte position of a print file, fast and exactly, from a checkpoint index.

``scan(path, pos, flavour, index=...)`` returns what ``replay_file(path, pos, flavour).state`` returns,
field for field, plus what a recovery needs (the layer the position is in, the Z range the nozzle may
still be at, the commands and settings lines seen). ``build_index`` writes the index once per file (a
full per-line pass, off the critical path: when the print starts); a lookup then restores the last
checkpoint at or before the position and feeds only the lines after it (at most ``every`` bytes, 128 KiB
by default). Without an index, ``scan`` feeds the whole prefix: the per-line tracker, at its speed.

Why an index and not a shortcut over the raw bytes (measured in benchmarks/bench_recovery.py, see
docs/recovery.md): several fields of the state are functions of every move of the prefix, not of the
last few commands. ``retracted`` follows ``max(0, r - dE)`` over every E word (one ``G1 E-1000`` early in
a file stays visible until 1000 mm have been pushed again), ``max_z`` is a maximum over every deposit,
``offsets["E"]`` sums every E word of a relative-E print that resets E with G92 each layer (the usual
PrusaSlicer output), ``unreadable`` counts malformed words anywhere. Exact values need every E/Z word
parsed and added in the tracker's order (floats do not associate); on the 2-core build machine just
finding the 3 million E words of a 100 MB file with a compiled regex takes 0.7 s and converting them
to floats another 0.75 s, so no exact byte-level shortcut reaches 200 MB/s. A checkpoint restores all
of that state at once and is exact by construction: it is the tracker's own state
(``StateTracker.export``), and the lines after it go through the same tracker.

Positions are OctoPrint's (see replay.py): a BOM counts, lines end at ``\\n``, ``\\r\\n`` or a lone
``\\r``, a line that does not decode counts the bytes of its replacement characters.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .line import ParsedLine, strip_comment
from .replay import regions
from .state import EXPORT_VERSION, FLAVOURS, PROBING_COMMANDS, PrinterState, StateTracker

__all__ = [
    "CHECKPOINT_EVERY",
    "IndexInfo",
    "ScanResult",
    "build_index",
    "fingerprint",
    "index_info",
    "scan",
    "tracker_at",
]

CHECKPOINT_EVERY = 128 * 1024  # bytes between checkpoints: bounds the lines fed per lookup
LAYER_EPS = 0.05  # mm: a deposit this far from the layer's Z starts a new layer (vase mode: every 0.05 mm)
_SAME_LAYER = LAYER_EPS - 1e-9  # a step of exactly 0.05 mm is a new layer, even as 0.7 - 0.65 in floats
LAYER_MATCH = 0.005  # mm: "at Z" / "from Z" is the first layer at Z >= z - LAYER_MATCH
Z_WINDOW = 32  # lines before pos the printer may not have run yet (OctoPrint's read-ahead, firmware buffers)
LOOKAHEAD = 256 * 1024  # bytes searched after pos for the next deposit
FINGERPRINT_BYTES = 1 << 20
MAX_COMMANDS = 256
MAX_SETTINGS = 64
INDEX_FORMAT = 1
_CHUNK = 1 << 20
_NAN = float("nan")

# Firmware settings a file may set that the tracker does not model and a reset forgets; replaying their
# last occurrences (in order) puts them back. None of them moves anything.
SETTINGS_COMMANDS = frozenset(
    [
        "M200", "M201", "M203", "M204", "M205", "M207", "M208", "M209", "M566", "M572", "M593", "M900",
        "SET_PRESSURE_ADVANCE", "SET_VELOCITY_LIMIT", "SET_RETRACTION", "SET_INPUT_SHAPER",
    ]
)  # fmt: skip
# Probing, levelling and loading a stored mesh: the mesh a print used is gone after a reset.
LEVELLING_COMMANDS = frozenset().union(*PROBING_COMMANDS.values()) | {"M420", "BED_MESH_PROFILE"}


def _code_version() -> str:
    # An index is only valid for the code that wrote it: hash the tracker, the parser and this module.
    h = hashlib.sha1(str(EXPORT_VERSION).encode())
    here = Path(__file__).resolve().parent
    for name in ("line.py", "state.py", "replay.py", "fastscan.py"):
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()[:16]


_CODE_VERSION: str | None = None


def code_version() -> str:
    global _CODE_VERSION
    if _CODE_VERSION is None:
        _CODE_VERSION = _code_version()
    return _CODE_VERSION


def fingerprint(path) -> dict:
    """Size, modification time and SHA-1 of the first and last MiB: cheap, and a file rewritten with
    the same size and a restored mtime still shows in the hashes unless only its middle changed."""
    st = os.stat(path)
    size = st.st_size
    with open(path, "rb") as fh:
        head = hashlib.sha1(fh.read(FINGERPRINT_BYTES)).hexdigest()
        fh.seek(max(0, size - FINGERPRINT_BYTES))
        tail = hashlib.sha1(fh.read(FINGERPRINT_BYTES)).hexdigest()
    return {"size": size, "mtime_ns": st.st_mtime_ns, "head": head, "tail": tail}


# ---------------------------------------------------------------------------------------------- walking


class _Extras:
    """What the scan keeps besides the tracker: commands seen, settings lines, the current layer."""

    __slots__ = ("commands", "settings", "probed", "ref", "layer_pos", "layer_off")

    def __init__(self):
        self.commands: set = set()
        self.settings: dict = {}  # (command, parameter letters) -> line, in order of last occurrence
        self.probed = False
        self.ref = _NAN  # machine Z of the current layer (its first deposit)
        self.layer_pos: int | None = None  # where the line of that first deposit starts (OctoPrint's count)
        self.layer_off: int | None = None  # the same, as a byte offset in the file

    def on_line(self, p: ParsedLine, raw: str) -> None:
        cmd = p.command
        if cmd is None:
            return
        if cmd not in self.commands and len(self.commands) < MAX_COMMANDS:
            self.commands.add(cmd)
        if cmd in SETTINGS_COMMANDS:
            if p.params:
                keys = "".join(sorted(p.params))
            else:
                keys = " ".join(sorted(w.partition("=")[0].upper() for w in p.text.split()))
            key = (cmd, keys)
            if key in self.settings or len(self.settings) < MAX_SETTINGS:
                self.settings.pop(key, None)  # re-insert: replay in the order of last occurrence
                self.settings[key] = strip_comment(raw).strip()
        elif cmd in LEVELLING_COMMANDS:
            self.probed = True

    def export(self) -> dict:
        return {
            "commands": sorted(self.commands),
            "settings": [[c, k, line] for (c, k), line in self.settings.items()],
            "probed": self.probed,
            "ref": self.ref,
            "layer_pos": self.layer_pos,
            "layer_off": self.layer_off,
        }

    @classmethod
    def restore(cls, data: dict) -> _Extras:
        x = cls()
        x.commands = set(data["commands"])
        x.settings = {(c, k): line for c, k, line in data["settings"]}
        x.probed = bool(data["probed"])
        x.ref = float(data["ref"])
        x.layer_pos = data["layer_pos"]
        x.layer_off = data["layer_off"]
        return x

    def clone(self) -> _Extras:
        return _Extras.restore(self.export())


def _lines(region: bytes) -> tuple[list, list | None, list | None]:
    """(texts, counted, raw) for the lines of a region: the bytes OctoPrint counts for each line and the
    bytes it takes in the file. None means len(text) + 1 for every line (ASCII, "\\n" only), the last
    one len(text) when the region has no final newline (the end of a file)."""
    if region.isascii() and b"\r" not in region:
        texts = region.decode("ascii").split("\n")
        if region.endswith(b"\n"):
            texts.pop()
            return texts, None, None
        lengths = [len(text) + 1 for text in texts]
        lengths[-1] -= 1
        return texts, lengths, lengths
    texts, counted, raws = [], [], []
    for raw in region.splitlines(True):
        try:
            text = raw.decode("utf-8")
            n = len(raw)
        except UnicodeDecodeError:
            # OctoPrint reads with errors="replace" and counts the replacement characters' bytes
            text = raw.decode("utf-8", "replace")
            n = len(text.encode("utf-8"))
        texts.append(text)
        counted.append(n)
        raws.append(len(raw))
    return texts, counted, raws


class _Walker:
    """Feeds a tracker line by line and follows the layers; optionally keeps the Z of the last lines.

    Two positions advance together: `pos` as OctoPrint counts it (filepos, recovery data) and `off`, the
    byte offset in the file (what a seek needs). They differ only after bytes that are not UTF-8."""

    def __init__(self, tracker: StateTracker, extras: _Extras, ring: deque | None = None, layers=None):
        self.t = tracker
        self.x = extras
        self.ring = ring
        self.layers = layers  # a list to append each layer's (Z, pos, offset) to, or None
        tracker.watch(extras.on_line)

    def feed_all(self, pos: int, off: int, texts: list, counted, raws) -> tuple[int, int]:
        """Feed every line; returns the positions after them. The hot loop of index builds."""
        if self.ring is not None or counted is not None:
            return self.feed_until(pos, off, texts, counted, raws, None)
        t, x = self.t, self.x
        feed = t.feed
        seen = t._layerz
        ref = x.ref
        for i, text in enumerate(texts):
            feed(text)
            lz = t._layerz
            if lz != seen:
                # a deposit at a new height (NaN != NaN: an unknown height never starts a layer)
                if lz == lz and not abs(lz - ref) < _SAME_LAYER:
                    ref = lz
                    before = sum(map(len, texts[:i])) + i  # rare: computed only here
                    x.layer_pos = pos + before
                    x.layer_off = off + before
                    if self.layers is not None:
                        self.layers.append((round(lz - t._oz, 4), x.layer_pos, x.layer_off))
                seen = lz
        x.ref = ref
        n = sum(map(len, texts)) + len(texts)
        return pos + n, off + n

    def feed_until(self, pos: int, off: int, texts: list, counted, raws, stop: int | None) -> tuple[int, int]:
        """Feed the lines ending at or before `stop` (all with None), keeping the Z window. Returns the
        positions after the last line fed."""
        t, x, ring = self.t, self.x, self.ring
        feed = t.feed
        seen = t._layerz
        ref = x.ref
        for i, text in enumerate(texts):
            if counted is None:
                end = pos + len(text) + 1
                next_off = off + len(text) + 1
            else:
                end = pos + counted[i]
                next_off = off + raws[i]
            if stop is not None and end > stop:
                break
            feed(text)
            lz = t._layerz
            if lz != seen:
                if lz == lz and not abs(lz - ref) < _SAME_LAYER:
                    ref = lz
                    x.layer_pos = pos
                    x.layer_off = off
                    if self.layers is not None:
                        self.layers.append((round(lz - t._oz, 4), pos, off))
                seen = lz
            if ring is not None:
                ring.append(t._z + t._oz)
            pos = end
            off = next_off
        x.ref = ref
        return pos, off

    def close(self) -> None:
        self.t.watch(None)


# ---------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class IndexInfo:
    path: str
    complete: bool
    checkpoints: int
    end: int  # the position of the last checkpoint
    valid: bool
    reason: str | None  # why the index cannot be used for this file and flavour
    # the file's layers, from a complete index: (logical Z of its first deposit, OctoPrint's position
    # and the byte offset of that deposit's line)
    layers: tuple = ()


def part_layers(layers) -> tuple:
    """The part's layers among the index's: from the first at the print's lowest height on, as slicers
    number them. What the start G-code deposits before it at another height (an intro line at Z0.28 above
    a 0.2 mm first layer) is no layer of the part: not a layer to stop at, nor one to resume from."""
    if not layers:
        return ()
    lowest = min(z for z, _, _ in layers)
    first = next(i for i, (z, _, _) in enumerate(layers) if z <= lowest + LAYER_MATCH)
    return tuple(layers[first:])


def _header(path, flavour: str, every: int, tools: int | None) -> dict:
    return {
        "safepause_index": INDEX_FORMAT,
        "code": code_version(),
        "flavour": flavour,
        "tools": tools,
        "every": every,
        "file": fingerprint(path),
    }


def build_index(
    path,
    flavour: str,
    out,
    every: int = CHECKPOINT_EVERY,
    *,
    cancelled: Callable[[], bool] | None = None,
    yield_every: float | None = None,
    tools: int | None = None,
) -> IndexInfo:
    """Feed the whole file once and write a checkpoint every `every` bytes to `out` (JSON lines).

    The checkpoints go to ``out + ".partial"`` as they are made (a build cut short by a crash is still
    usable up to its last whole line) and the file is renamed to `out` when complete. `cancelled` is
    polled between chunks; `yield_every` (s) sleeps that long between chunks so that a build on a
    thread of a busy process gives the other threads the interpreter lock. `tools`: the tracker's (how
    many tools the host lets through); a lookup must ask for the same.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown firmware flavour {flavour!r}")
    out = str(out)
    partial = out + ".partial"
    header = _header(path, flavour, every, tools)
    t = StateTracker(flavour, tools=tools)
    extras = _Extras()
    layers: list = []
    walker = _Walker(t, extras, layers=layers)
    count = 0
    last = 0
    try:
        with open(path, "rb") as fh, open(partial, "w", encoding="utf-8") as idx:
            idx.write(json.dumps(header) + "\n")
            pos = None
            for off, region, _eof in regions(fh, 0, every):
                if pos is None:
                    pos = off
                pos, off = walker.feed_all(pos, off, *_lines(region))
                end = pos
                record = {"t": t.export(), "x": extras.export()}
                idx.write(f"{pos} {off} {json.dumps(record, separators=(',', ':'))}\n")
                count += 1
                last = end
                if cancelled is not None and cancelled():
                    idx.flush()
                    return IndexInfo(partial, False, count, last, True, "cancelled")
                if yield_every:
                    time.sleep(yield_every)  # releases the interpreter lock for the other threads
            idx.write(json.dumps({"complete": True, "end": last, "lines": t.lines, "layers": layers}) + "\n")
            idx.flush()
            os.fsync(idx.fileno())
        os.replace(partial, out)
    finally:
        walker.close()
    return IndexInfo(out, True, count, last, True, None, tuple(map(tuple, layers)))


def _open_index(index) -> tuple[str, object] | None:
    for candidate in (str(index), str(index) + ".partial"):
        try:
            return candidate, open(candidate, "rb")  # noqa: SIM115 (closed by the caller)
        except OSError:
            continue
    return None


def _read_index(index, path, flavour: str, tools: int | None, pos: int | None, keep: int = 2):
    """(info, [(pos, offset, raw checkpoint)] of the last `keep` checkpoints at or before pos). With pos
    None the whole index is read (for the info only)."""
    opened = _open_index(index)
    if opened is None:
        return IndexInfo(str(index), False, 0, 0, False, "no index"), []
    name, fh = opened
    with fh:
        try:
            header = json.loads(fh.readline())
        except ValueError:
            return IndexInfo(name, False, 0, 0, False, "unreadable index header"), []
        reason = None
        if not isinstance(header, dict) or header.get("safepause_index") != INDEX_FORMAT:
            reason = "index format differs"
        elif header.get("code") != code_version():
            reason = "index written by another version of the tracker"
        elif header.get("flavour") != flavour:
            reason = f"index built for {header.get('flavour')}, not {flavour}"
        elif header.get("tools") != tools:
            reason = f"index built for {header.get('tools')} tools, not {tools}"
        else:
            try:
                if header.get("file") != fingerprint(path):
                    reason = "the file changed since the index was built"
            except OSError as error:
                reason = f"cannot read the file: {error}"
        if reason:
            return IndexInfo(name, False, 0, 0, False, reason), []
        best: deque = deque(maxlen=keep)
        count = 0
        last = 0
        complete = False
        layers: tuple = ()
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # cut short by a crash
            if raw.startswith(b"{"):
                complete = b'"complete"' in raw
                if complete and pos is None:
                    try:
                        layers = tuple(tuple(layer) for layer in json.loads(raw).get("layers") or ())
                    except ValueError:
                        complete = False
                break
            head, _, rest = raw.partition(b" ")
            off, _, rest = rest.partition(b" ")
            try:
                end, off = int(head), int(off)
            except ValueError:
                break
            if pos is not None and end > pos:
                break  # checkpoints are in file order: nothing further can be used
            count += 1
            last = end
            best.append((end, off, rest))
        return IndexInfo(name, complete, count, last, True, None, layers), list(best)


def index_info(index, path, flavour: str, *, tools: int | None = None) -> IndexInfo:
    """Whether `index` can serve `path` with `flavour` (and `tools`), and how far it reaches."""
    info, _ = _read_index(index, path, flavour, tools, None)
    return info


# ---------------------------------------------------------------------------------------------- scans


@dataclass(frozen=True)
class ScanResult:
    """The state at `pos` and what a recovery needs around it. Z values are logical (the frame at pos).

    Positions (``pos``, ``end``, ``layer_pos``) are OctoPrint's count, like its filepos and recovery
    data; ``*_offset`` are the same places as byte offsets in the file, which is what OctoPrint's
    ``start_print(pos=...)`` seeks to. They differ only after bytes that are not UTF-8."""

    state: PrinterState
    pos: int  # the position asked for
    end: int  # where the last line fed ends (<= pos): a print continuing from here reads on from `end`
    end_offset: int
    size: int
    layer_z: float | None  # Z of the layer the last deposit belongs to (its first deposit's Z)
    layer_pos: int | None  # where the line of that layer's first deposit starts
    layer_offset: int | None
    layer_done: bool | None  # the next deposit after `end` starts a new layer (None: none within reach)
    z_low: float | None  # lowest Z of the nozzle over the last Z_WINDOW lines (None: unknown in some)
    z_high: float | None
    commands: frozenset[str]  # every command word seen before pos (first MAX_COMMANDS)
    settings: tuple[str, ...]  # last lines of SETTINGS_COMMANDS, in the order they last appeared
    probed: bool  # the file probed or levelled the bed before pos
    feedrate_backup: float  # the M220 B backup
    checkpoint: int  # where feeding started (0: the file start, no usable index)
    index_reason: str | None  # why no checkpoint was used, when an index was given

    def _layer_start(self) -> bool:
        return self.layer_pos is not None and self.layer_done is False and self.layer_pos <= self.end

    @property
    def resume_layer_pos(self) -> int:
        """Where "from the start of the layer" resumes: the layer's first deposit, or `end` when that
        layer is complete (or nothing was deposited yet)."""
        return self.layer_pos if self._layer_start() else self.end

    @property
    def resume_layer_offset(self) -> int:
        return self.layer_offset if self._layer_start() else self.end_offset

    def as_dict(self) -> dict:
        return {
            "pos": self.pos,
            "end": self.end,
            "end_offset": self.end_offset,
            "size": self.size,
            "layer_z": self.layer_z,
            "layer_pos": self.layer_pos,
            "layer_offset": self.layer_offset,
            "layer_done": self.layer_done,
            "resume_layer_pos": self.resume_layer_pos,
            "resume_layer_offset": self.resume_layer_offset,
            "z_low": self.z_low,
            "z_high": self.z_high,
            "commands": sorted(self.commands),
            "settings": list(self.settings),
            "probed": self.probed,
            "feedrate_backup": self.feedrate_backup,
            "checkpoint": self.checkpoint,
            "state": self.state.as_dict(),
        }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _candidates(path, pos: int, flavour: str, tools: int | None, index, keep: int):
    """[(pos, offset, checkpoint record)] usable for pos, latest first, and why an index was not used."""
    reason = None
    candidates = []
    if index is not None:
        info, best = _read_index(index, path, flavour, tools, pos, keep)
        reason = info.reason
        for end, off, raw in reversed(best):
            try:
                candidates.append((end, off, json.loads(raw)))
            except ValueError:
                reason = "damaged checkpoint"
                break
    return candidates, reason


def _walk_to(fh, start: int, start_off: int, stop: int, walker: _Walker, chunk: int) -> tuple[int, int]:
    pos, off = start, start_off
    first = True
    for roff, region, eof in regions(fh, start_off, chunk):
        if first:
            first = False
            if start_off == 0:
                pos = off = roff  # after a BOM both are 3
        texts, counted, raws = _lines(region)
        total = len(region) if counted is None else sum(counted)
        if not eof and pos + total <= stop:
            pos, off = walker.feed_all(pos, off, texts, counted, raws)
            continue
        pos, off = walker.feed_until(pos, off, texts, counted, raws, stop)
        break
    return pos, off


def _next_deposit(fh, start_off: int, tracker: StateTracker) -> float | None:
    """Machine Z of the first deposit at or after the byte offset `start_off`, within LOOKAHEAD bytes,
    fed to a copy of the tracker."""
    probe = StateTracker.restore(tracker.export())
    probe._layerz = _NAN  # any deposit now sets it
    for roff, region, _eof in regions(fh, start_off, 64 * 1024):
        for text in _lines(region)[0]:
            probe.feed(text)
            if probe._layerz == probe._layerz:
                return probe._layerz
        if roff + len(region) - start_off >= LOOKAHEAD:
            break
    return None


def _scan(path, pos: int, flavour: str, index, lookahead: bool, tools: int | None):
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown firmware flavour {flavour!r}")
    pos = int(pos)
    size = os.path.getsize(path)
    candidates, reason = _candidates(path, pos, flavour, tools, index, keep=3)
    candidates.append((0, 0, None))
    with open(path, "rb") as fh:
        for start, start_off, record in candidates:
            if record is None:
                t, extras = StateTracker(flavour, tools=tools), _Extras()
            else:
                t = StateTracker.restore(record["t"])
                extras = _Extras.restore(record["x"])
            ring: deque = deque([t._z + t._oz], maxlen=Z_WINDOW + 1)
            walker = _Walker(t, extras, ring)
            try:
                # small reads after a checkpoint (the tail is short), large ones from the file start
                end, end_off = _walk_to(
                    fh, start, start_off, pos, walker, _CHUNK if start == 0 else 64 * 1024
                )
            finally:
                walker.close()
            if start == 0 or len(ring) == ring.maxlen:
                break
            # fewer than Z_WINDOW lines since this checkpoint: an earlier one gives the whole Z window
        if index is not None and start == 0 and reason is None and pos > 0:
            reason = "no checkpoint at or before the position"
        layer_done = None
        if lookahead and extras.layer_pos is not None:
            z = _next_deposit(fh, end_off, t)
            if z is not None:
                layer_done = not abs(z - extras.ref) < _SAME_LAYER
    oz = t._oz
    zs = [z - oz for z in ring]
    if not all(map(math.isfinite, zs)):
        zs = []  # the nozzle may be where the tracker does not know: no bound at all
    result = ScanResult(
        state=t.state,
        pos=pos,
        end=end,
        end_offset=end_off,
        size=size,
        layer_z=_finite(extras.ref - oz),
        layer_pos=extras.layer_pos,
        layer_offset=extras.layer_off,
        layer_done=layer_done,
        z_low=min(zs) if zs else None,
        z_high=max(zs) if zs else None,
        commands=frozenset(extras.commands),
        settings=tuple(extras.settings.values()),
        probed=extras.probed,
        feedrate_backup=t._ffbackup,
        checkpoint=start,
        index_reason=reason,
    )
    return result, t


def scan(
    path, pos: int, flavour: str = "marlin", index=None, *, lookahead: bool = True, tools: int | None = None
) -> ScanResult:
    """The state after every line of `path` that ends at or before `pos`, and the recovery facts.

    `index`: a file written by build_index for this file, flavour and `tools` (or its ``.partial``); one
    that does not match (another file, flavour, tool count or tracker version) is ignored and
    ``index_reason`` says why. `tools`: see StateTracker (None: every T counts).
    """
    return _scan(path, pos, flavour, index, lookahead, tools)[0]


def tracker_at(
    path, offset: int, flavour: str = "marlin", index=None, *, tools: int | None = None
) -> StateTracker | None:
    """A live tracker after every line of `path` that ends at or before the byte `offset`, to go on with
    the lines from there: e.g. the state of a print that OctoPrint starts at that offset (a recovery),
    whose positions it counts from the offset. None when `offset` is not where a line starts."""
    offset = int(offset)
    # `scan` counts positions as OctoPrint's reader from the file start, where a byte that is not UTF-8
    # counts 3: never less than the offset, so the lines up to `offset` in bytes are fed here or below.
    result, tracker = _scan(path, offset, flavour, index, False, tools)
    if result.end_offset == offset:
        return tracker
    want = offset - result.end_offset
    if want < 0:
        return None  # inside the byte order mark
    with open(path, "rb") as fh:
        fh.seek(result.end_offset)
        rest = fh.read(want + 1)
    rest, after = rest[:want], rest[want:]
    if len(rest) != want:
        return None  # beyond the end of the file
    if not (after == b"" or rest.endswith(b"\n") or (rest.endswith(b"\r") and after != b"\n")):
        return None  # inside a line (between the two bytes of a CRLF, too)
    tracker.feed_many(_lines(rest)[0])  # the texts the scan would have fed (undecodable bytes replaced)
    return tracker
