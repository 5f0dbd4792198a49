"""The state at a position of a print file, fast: checkpoint indexes and file fingerprints.

An index (gcode/fastscan.py) holds the tracker's exported state every 128 KiB of a file. It is built in
the background when a print starts, for the flavour and the tool count the controller's shadow tracker
uses, and named after the file's path, fingerprint, flavour, tools and the code version, so an index is
only ever used for the file and the code that wrote it. The last few are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ..gcode import StateTracker, fastscan

INDEX_DIR = "recovery-index"
_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # octoprint_safepause/: `core` imports from there
# The build, in a child that imports the core alone (not the plugin package, which imports OctoPrint).
# It lowers its own priority (a preexec_fn is not safe in OctoPrint's threaded process).
_CHILD = (
    "import os, sys\n"
    "if hasattr(os, 'nice'): os.nice(10)\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from core.gcode import fastscan\n"
    "fastscan.build_index(sys.argv[2], sys.argv[3], sys.argv[4], tools=int(sys.argv[5]))"
)
KEEP_INDEXES = 8  # a file with scheduled stops needs its index at print start (else the print waits for it)
SYNC_SCAN_LIMIT = 8 * 1024 * 1024  # bytes scanned synchronously when there is no index
KEEP_ANALYSES = 4


class Fingerprints:
    """fastscan.fingerprint, hashed again only when the file's size, mtime or inode changed: every GET of
    the status asks, and the hashes read 2 MiB."""

    def __init__(self):
        self._cache: tuple | None = None  # ((path, size, mtime, inode), fingerprint)

    def __call__(self, disk: str) -> dict:
        st = os.stat(disk)
        key = (disk, st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._cache
        if cached is None or cached[0] != key:
            cached = self._cache = (key, fastscan.fingerprint(disk))
        return cached[1]


class IndexStore:
    """Indexes in `<data folder>/recovery-index`, built on `spawn(fn, name)` threads; the last analysis
    cached. Thread-safe."""

    def __init__(
        self, data_folder, *, spawn: Callable[[Callable[[], None], str], Any], logger: logging.Logger
    ):
        self._dir = Path(data_folder) / INDEX_DIR
        self._spawn = spawn
        self._log = logger
        self._lock = threading.Lock()
        self._building: set = set()
        self._waiters: dict = {}  # index path -> callbacks for when its build ends
        self._processes: set = set()
        self._cancel = threading.Event()
        self._analyses: dict = {}  # key -> (at_pos, at_layer): the read and the delivered position

    def stop(self) -> None:
        self._cancel.set()
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            with contextlib.suppress(OSError):
                process.kill()

    def path(self, disk: str, fp: dict, flavour: str, tools: int) -> Path:
        digest = hashlib.sha1(
            json.dumps([disk, fp, flavour, tools, fastscan.code_version()], sort_keys=True).encode()
        ).hexdigest()[:20]
        return self._dir / f"{digest}.idx"

    def build(
        self, disk: str, fp: dict, flavour: str, tools: int, done: Callable[[], None] | None = None
    ) -> None:
        """Build the index in the background unless it exists or is being built; `done()` once that
        build ended (not called when the index exists already)."""
        target = self.path(disk, fp, flavour, tools)
        with self._lock:
            if target.exists():
                return
            if done is not None:
                self._waiters.setdefault(str(target), []).append(done)
            if str(target) in self._building:
                return
            self._building.add(str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        self._prune(keep=target)

        def work():
            # In a process of its own, at a lower priority: on a thread of OctoPrint's process the build
            # held the interpreter lock from the serial threads (benchmarks/bench_index_build.py: a
            # fifth of the send rate and gaps of 180 ms between lines). The child imports only the core.
            try:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-c", _CHILD, str(_PACKAGE_DIR), disk, flavour, str(target), str(tools)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            except OSError as error:
                self._log.warning("SafePause: index of %s not built: %s", disk, error)
                self._ended(target)
                return
            with self._lock:
                self._processes.add(process)
            try:
                _, err = process.communicate()
                if process.returncode != 0 and not self._cancel.is_set():
                    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                    self._log.warning("SafePause: index of %s not built: %s", disk, tail[0])
            finally:
                with self._lock:
                    self._processes.discard(process)
                self._ended(target)

        self._spawn(work, "safepause-index")

    def _ended(self, target: Path) -> None:
        with self._lock:
            self._building.discard(str(target))
            waiters = self._waiters.pop(str(target), [])
        for done in waiters:
            try:
                done()
            except Exception:
                self._log.exception("SafePause: after the index build")

    def layers(self, disk: str, fp: dict, flavour: str, tools: int, done: Callable[[], None] | None = None):
        """The part's layers (fastscan.part_layers) from the file's complete index ((z, pos, offset)
        triples), or None while the index is being built (started now if need be; `done()` when it ends)."""
        index = self.path(disk, fp, flavour, tools)
        info = fastscan.index_info(index, disk, flavour, tools=tools)
        if not (info.valid and info.complete):
            self.build(disk, fp, flavour, tools, done)
            info = fastscan.index_info(index, disk, flavour, tools=tools)  # (done already by a synchronous spawn)
        return fastscan.part_layers(info.layers) if info.valid and info.complete else None

    def _prune(self, keep: Path) -> None:
        try:
            files = sorted(keep.parent.glob("*.idx*"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        stems = []
        for p in files:
            stem = p.name.split(".idx")[0]
            if stem not in stems:
                stems.append(stem)
        for stem in stems[KEEP_INDEXES - 1 :]:
            if stem == keep.name.split(".idx")[0]:
                continue
            for p in keep.parent.glob(stem + ".idx*"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def analyse(self, disk: str, fp: dict, pos: int, flavour: str, tools: int, generation: int):
        """(the scan at `pos`, the scan at the start of its layer), or None while an index must be built
        first (a large file without one: the build is started). `generation`: the record's, so that a
        changed record is analysed afresh even at the same position."""
        key = (disk, pos, fp["size"], fp["mtime_ns"], flavour, tools, generation)
        cached = self._analyses.get(key)
        if cached is not None:
            return cached
        index = self.path(disk, fp, flavour, tools)
        usable = fastscan.index_info(index, disk, flavour, tools=tools)
        if not (usable.valid and (usable.complete or usable.end >= pos - SYNC_SCAN_LIMIT)):
            if pos > SYNC_SCAN_LIMIT:
                self.build(disk, fp, flavour, tools)
                return None
            index = None
        at_pos = fastscan.scan(disk, pos, flavour, index=index, tools=tools)
        layer = at_pos.resume_layer_pos
        at_layer = (
            at_pos if layer == at_pos.end else fastscan.scan(disk, layer, flavour, index=index, tools=tools)
        )
        if len(self._analyses) >= KEEP_ANALYSES:
            self._analyses.pop(next(iter(self._analyses)))
        self._analyses[key] = (at_pos, at_layer)
        return at_pos, at_layer

    def tracker_at(self, disk: str, fp: dict, offset: int, flavour: str, tools: int) -> StateTracker | None:
        """A tracker with the file's state before `offset`, from the index when there is one."""
        index = self.path(disk, fp, flavour, tools)
        return fastscan.tracker_at(disk, offset, flavour, index=index, tools=tools)

