"""Recovering a print that died: OctoPrint's recovery data in, a print started again at the right place out.

Duck-typed like port.py: it is handed OctoPrint's file manager and printer and a few callables, and
imports nothing from OctoPrint. What it relies on (octoprint 1.11, read in the sources):

* ``file_manager.get_recovery_data()`` -> ``{origin, path, pos, date}`` or None; OctoPrint writes it
  (``save_recovery_data``) when a print is cancelled and when the connection closes while printing
  (``comm._recordFilePosition``: ``pos`` is what the file reader had *read*), and deletes it when a print
  finishes, when any print starts (``printer.start_print``) and when another file is selected. It keeps
  no hash of the file, and nothing at all when the host itself loses power.
* So this service keeps its own record in the plugin's data folder (``recovery.json``): OctoPrint's data
  adopted when a print fails, the position of the running print written every few seconds (for a host
  that dies with the printer), the file's fingerprint taken when the print started (size, mtime, SHA-1
  of its first and last MiB) to tell that the file has not changed since. The record stays until it is
  recovered, discarded, or a later print finishes normally.
* ``printer.start_print(pos=...)`` seeks OctoPrint's reader to a byte offset. To have the prelude go
  out before the first file line, ``recover`` takes OctoPrint's job hold, starts the print (its
  ``beforePrintStarted`` script, line number reset and the file all wait behind the hold), checks that
  the job really started, sends the prelude with ``printer.commands`` (while held they go straight to
  the send queue, in order, ahead of everything the job queues), and releases the hold. If the job did
  not start, nothing has been sent; if sending fails, the job is cancelled while still held, so no file
  line ever goes out without its prelude.

The state at the position comes from gcode/fastscan.py with a checkpoint index built when the print
started (in the background, see ``on_event``; for the flavour and the profile's tool count, as the
controller's shadow tracker has them); without one the first analysis of a large file is deferred to a
background build (``status: "analysing"``). The same index seeds the controller's shadow tracker when
the recovered print runs (``shadow_start``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..gcode import StateTracker, fastscan
from ..safety import Problem, plain_line_problem
from ..sequences import MotionSettings, Volume
from ..settings_schema import motion_kwargs
from .prelude import LAYER, POSITION, STARTS, TAG, RecoveryError, build_prelude, prelude_check, settings_from

STATE_FILE = "recovery.json"
INDEX_DIR = "recovery-index"
KEEP_INDEXES = 4
KEEP_JOBS = 16
LIVE_INTERVAL = 10.0  # s between writes of the running print's position
SYNC_SCAN_LIMIT = 8 * 1024 * 1024  # bytes scanned synchronously when there is no index
MAX_PRELUDE_LINES = 300
MAX_LINE = 200
# Lines in OctoPrint's beforePrintStarted script that would move the head before the prelude has run.
_UNSAFE_SCRIPT_WORDS = (
    "G28",
    "G29",
    "G30",
    "G32",
    "G80",
    "BED_MESH_CALIBRATE",
    "QUAD_GANTRY_LEVEL",
    "Z_TILT",
)


class RecoveryRefused(Exception):
    """A request that cannot be served now; `status` is the HTTP status the API should answer."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def _key(origin: str, path: str) -> str:
    return f"{origin}:{path}"


class RecoveryService:
    def __init__(
        self,
        data_folder,
        file_manager,
        printer,
        *,
        flavour: Callable[[], str] = lambda: "marlin",
        settings: Callable[[], dict] = dict,
        profile: Callable[[], dict] = dict,
        script: Callable[[str], str | None] | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        spawn: Callable[[Callable[[], None], str], Any] | None = None,
        emit: Callable[[str, dict], None] | None = None,
        live_interval: float = LIVE_INTERVAL,
    ):
        self._dir = Path(data_folder)
        self._files = file_manager
        self._printer = printer
        self._flavour = flavour
        self._settings = settings
        self._profile = profile
        self._script = script
        self._log = logger or logging.getLogger(__name__)
        self._clock = clock
        self._spawn = spawn or _thread
        self._emit = emit or (lambda name, payload: None)
        self._live_interval = live_interval
        self._lock = threading.RLock()
        self._data: dict = {"version": 1, "record": None, "live": None, "jobs": {}, "correction": None}
        self._discarded: tuple | None = None
        self._analyses: dict = {}  # (record key) -> (at_pos, at_layer, disk path)
        self._fingerprint_cache: tuple | None = None  # ((path, size, mtime, inode), fingerprint)
        self._building: set = set()
        self._cancel_builds = threading.Event()
        self._recovering = False
        self._resumed: dict | None = None  # the print recover() started: origin, path, offset, fingerprint
        self._last_live = 0.0
        self._loaded = False

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = json.loads((self._dir / STATE_FILE).read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == 1:
                self._data.update({k: data.get(k, self._data[k]) for k in self._data})
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            self._log.warning("SafePause: unreadable %s (%s), starting afresh", STATE_FILE, error)

    def _save(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        target = self._dir / STATE_FILE
        tmp = target.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self._data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)  # atomic: a power loss leaves the old or the new file, never half

    # ------------------------------------------------------------------ lifecycle and events

    def start(self) -> None:
        """At plugin startup: a print that was running when OctoPrint (or the host) died becomes the
        record, unless OctoPrint's own data for it is more precise."""
        with self._lock:
            self._load()
            live = self._data.get("live")
            if live:
                self._data["live"] = None
                self._adopt(dict(live, source="safepause"))
            self._sync()
            self._save()

    def stop(self) -> None:
        self._cancel_builds.set()

    def on_event(self, event: str, payload: dict | None) -> None:
        """OctoPrint events: PrintStarted, PrintDone, PrintFailed, PrintCancelled, Disconnected, Error."""
        payload = payload or {}
        with self._lock:
            self._load()
            resumed = self._resumed
            if event in ("PrintDone", "PrintFailed", "PrintCancelled", "Disconnected", "Error") or (
                event == "PrintStarted"
                and resumed
                and (payload.get("origin"), payload.get("path")) != (resumed["origin"], resumed["path"])
            ):
                self._resumed = None  # the recovered print ended, or another one started
            if event == "PrintStarted":
                self._on_print_started(payload)
            elif event == "PrintDone":
                # a print that ends normally closes the story of any earlier one
                self._data.update(record=None, live=None, correction=None)
                self._analyses.clear()
            elif event in ("PrintFailed", "PrintCancelled", "Disconnected", "Error"):
                self._data["live"] = None
                self._sync()
            else:
                return
            self._save()

    def _on_print_started(self, payload: dict) -> None:
        origin, path = payload.get("origin"), payload.get("path")
        self._data["correction"] = None  # a correction belongs to the print that ended
        if origin != "local" or not path:
            return
        try:
            disk = self._files.path_on_disk(origin, path)
            fp = fastscan.fingerprint(disk)
        except Exception as error:
            self._log.warning("SafePause: no fingerprint of %s: %s", path, error)
            return
        flavour, tools = self._flavour(), self._tools()
        jobs = self._data.setdefault("jobs", {})
        jobs.pop(_key(origin, path), None)
        jobs[_key(origin, path)] = {"fingerprint": fp, "flavour": flavour, "started": self._clock()}
        while len(jobs) > KEEP_JOBS:
            jobs.pop(next(iter(jobs)))
        self._data["live"] = {"origin": origin, "path": path, "pos": 0, "date": self._clock()}
        self._last_live = 0.0
        self._build_index(disk, fp, flavour, tools)

    def note_progress(self, origin: str, path: str, pos: int | None) -> None:
        """The running print's file position, from whoever polls it (the controller, every second);
        written at most every `live_interval` seconds, so that a host that dies leaves a position."""
        if origin != "local" or not path or pos is None:
            return
        now = self._clock()
        if now - self._last_live < self._live_interval:
            return
        with self._lock:
            self._load()
            live = self._data.get("live") or {}
            if live.get("path") == path and live.get("pos") == pos:
                return
            self._data["live"] = {"origin": origin, "path": path, "pos": int(pos), "date": now}
            self._last_live = now
            self._save()

    def correct_position(self, origin: str, path: str, pos: int, z: float | None = None) -> bool:
        """A SafePause hold ended in a disconnect, error or cancel: OctoPrint recorded a position after
        the line(s) the hold suppressed, which never reached the printer. Point the recovery at `pos`
        (where the suppressed line starts) instead: now, and again whenever OctoPrint writes its data for
        this print later (a cancel during a hold records it only when the hold is released). `z`: the
        logical Z the pause had lifted the nozzle to (plan.travel_z), when its lines went out; a
        position-lost recovery declares that instead of guessing from the file. Returns True when
        OctoPrint's data was rewritten now."""
        z = None if z is None else float(z)
        with self._lock:
            self._load()
            self._data["correction"] = {
                "origin": origin,
                "path": path,
                "pos": int(pos),
                "z": z,
                "date": self._clock(),
            }
            record = self._data.get("record")
            if record and record.get("origin") == origin and record.get("path") == path:
                record.update(pos=int(pos), source="hold", z=z)
                self._analyses.clear()
            done = self._apply_correction()
            self._save()
            return done

    def _apply_correction(self) -> bool:
        fix = self._data.get("correction")
        if not fix:
            return False
        try:
            data = self._files.get_recovery_data()
        except Exception:
            data = None
        if not data or data.get("origin") != fix["origin"] or data.get("path") != fix["path"]:
            return False
        if data.get("pos") != fix["pos"]:
            self._files.save_recovery_data(fix["origin"], fix["path"], fix["pos"])
            self._log.info(
                "SafePause: recovery position of %s set to %d (the held line), not %s",
                fix["path"],
                fix["pos"],
                data.get("pos"),
            )
        return True

    def _sync(self) -> None:
        """Adopt OctoPrint's recovery data when it is newer than our record (with any correction)."""
        self._apply_correction()
        try:
            data = self._files.get_recovery_data()
        except Exception as error:
            self._log.warning("SafePause: cannot read OctoPrint's recovery data: %s", error)
            return
        if not data:
            return
        try:
            item = {
                "origin": str(data["origin"]),
                "path": str(data["path"]),
                "pos": int(data["pos"]),
                "date": float(data["date"]),
                "source": "octoprint",
            }
        except (KeyError, TypeError, ValueError):
            return
        fix = self._data.get("correction")
        if fix and fix["origin"] == item["origin"] and fix["path"] == item["path"]:
            item.update(pos=fix["pos"], source="hold", z=fix.get("z"))
        self._adopt(item)

    def _adopt(self, item: dict) -> None:
        marker = (item.get("origin"), item.get("path"), item.get("pos"), item.get("date"))
        if marker == self._discarded:
            return
        record = self._data.get("record")
        if record and float(record.get("date") or 0) > float(item.get("date") or 0):
            return  # ours is newer (a later failure)
        job = (self._data.get("jobs") or {}).get(_key(item["origin"], item["path"])) or {}
        item["fingerprint"] = job.get("fingerprint")
        item.setdefault("flavour", job.get("flavour"))
        if record != item:
            self._data["record"] = item
            self._analyses.clear()
            self._emit("recovery_available", _public(item))

    # ------------------------------------------------------------------ the index

    def _tools(self) -> int:
        """How many tools OctoPrint lets through (it drops T<n> beyond the profile's extruders): the
        tracker's `tools`, as the controller's shadow has it."""
        try:
            return Volume.from_profile(self._profile() or {}).extruders
        except (TypeError, ValueError):
            return 1  # as the controller does with a profile it cannot read

    def _index_path(self, disk: str, fp: dict, flavour: str, tools: int) -> Path:
        digest = hashlib.sha1(
            json.dumps([disk, fp, flavour, tools, fastscan.code_version()], sort_keys=True).encode()
        ).hexdigest()[:20]
        return self._dir / INDEX_DIR / f"{digest}.idx"

    def _build_index(
        self, disk: str, fp: dict, flavour: str, tools: int, done: Callable[[], None] | None = None
    ) -> None:
        target = self._index_path(disk, fp, flavour, tools)
        if target.exists() or str(target) in self._building:
            return
        self._building.add(str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        self._prune_indexes(keep=target)

        def work():
            try:
                fastscan.build_index(
                    disk,
                    flavour,
                    target,
                    cancelled=self._cancel_builds.is_set,
                    yield_every=0.0005,
                    tools=tools,
                )
            except Exception as error:  # the index only speeds things up; never fail a print for it
                self._log.warning("SafePause: index of %s not built: %s", disk, error)
            finally:
                with self._lock:
                    self._building.discard(str(target))
                if done is not None:
                    done()

        self._spawn(work, "safepause-index")

    def _prune_indexes(self, keep: Path) -> None:
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

    def shadow_start(
        self, origin: str, path: str, *, flavour: str, tools: int
    ) -> tuple[StateTracker, int] | None:
        """Where the controller's shadow tracker of the running print starts, when recover() started it at
        a byte offset: (a tracker with the state of the file before that offset, the offset). OctoPrint
        reads on from the offset and counts its positions from there, so a follower must too. From the
        checkpoint index built when the print first ran: milliseconds, where replaying the prefix costs
        the controller thread ~6 s per 100 MB. None for any other print or a file that changed since
        (then the shadow starts at the file start, as for every print). `flavour` and `tools`: the
        shadow's own (StateTracker)."""
        with self._lock:
            resumed = self._resumed
        if not resumed or (resumed["origin"], resumed["path"]) != (origin, path):
            return None
        try:
            disk = self._files.path_on_disk(origin, path)
            if resumed["fingerprint"] is None or self._fingerprint(disk) != resumed["fingerprint"]:
                return None
            index = self._index_path(disk, resumed["fingerprint"], flavour, tools)
            tracker = fastscan.tracker_at(disk, resumed["offset"], flavour, index=index, tools=tools)
        except Exception as error:  # the shadow then replays the file; never fail the print for it
            self._log.warning("SafePause: no shadow start for %s: %s", path, error)
            return None
        return None if tracker is None else (tracker, resumed["offset"])

    # ------------------------------------------------------------------ what can be recovered

    def _fingerprint(self, disk: str) -> dict:
        """fastscan.fingerprint, hashed again only when the file's size, mtime or inode changed: every
        GET of the status asks, and the hashes read 2 MiB."""
        st = os.stat(disk)
        key = (disk, st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._fingerprint_cache
        if cached is None or cached[0] != key:
            cached = self._fingerprint_cache = (key, fastscan.fingerprint(disk))
        return cached[1]

    def _check(self, record: dict) -> tuple[str | None, dict | None, str | None, list]:
        """(path on disk, fingerprint now, why it cannot be recovered, warnings)."""
        warnings: list = []
        if record.get("origin") != "local":
            return (
                None,
                None,
                "only prints streamed from OctoPrint can be recovered (this was an SD card print)",
                [],
            )
        try:
            if not self._files.file_exists(record["origin"], record["path"]):
                return None, None, "the file no longer exists", []
            disk = self._files.path_on_disk(record["origin"], record["path"])
            fp = self._fingerprint(disk)
        except Exception as error:
            return None, None, f"the file cannot be read: {error}", []
        known = record.get("fingerprint")
        if known:
            if known != fp:
                return disk, fp, "the file changed since the print started", []
        else:
            if fp["mtime_ns"] / 1e9 > float(record.get("date") or 0) + 1.0:
                return disk, fp, "the file was modified after the print stopped", []
            warnings.append(
                "the file's fingerprint was not taken when the print started: only its modification "
                "time was checked"
            )
        if not 0 <= int(record["pos"]) <= fp["size"]:
            return disk, fp, "the recorded position lies beyond the end of the file", warnings
        return disk, fp, None, warnings

    def _analyse(self, record: dict, disk: str, fp: dict, flavour: str):
        """(at_pos, at_layer) or None while a background index build is needed first."""
        tools = self._tools()
        key = (
            record["origin"],
            record["path"],
            int(record["pos"]),
            fp["size"],
            fp["mtime_ns"],
            flavour,
            tools,
        )
        cached = self._analyses.get(key)
        if cached is not None:
            return cached
        index = self._index_path(disk, fp, flavour, tools)
        usable = fastscan.index_info(index, disk, flavour, tools=tools)
        pos = int(record["pos"])
        if not (usable.valid and (usable.complete or usable.end >= pos - SYNC_SCAN_LIMIT)):
            if pos > SYNC_SCAN_LIMIT:
                self._build_index(disk, fp, flavour, tools)
                return None
            index = None
        at_pos = fastscan.scan(disk, pos, flavour, index=index, tools=tools)
        layer = at_pos.resume_layer_pos
        at_layer = (
            at_pos if layer == at_pos.end else fastscan.scan(disk, layer, flavour, index=index, tools=tools)
        )
        self._analyses = {key: (at_pos, at_layer)}
        return at_pos, at_layer

    def get_recovery(self, position_kept: bool | None = None, start: str | None = None) -> dict | None:
        """The print that can be recovered, with the prelude for the given choices (defaults: position
        lost, from the recorded position), or None when there is nothing to recover.

        ``valid`` False with ``error`` when it cannot be recovered (file gone or changed, SD print);
        ``status`` "analysing" while the state is being rebuilt in the background (call again)."""
        return self._recovery(position_kept, start)[0]

    def _recovery(self, position_kept: bool | None, start: str | None) -> tuple[dict | None, Callable | None]:
        """(get_recovery's answer, a function that returns the safety check seeded where the prelude
        starts, or None while there is no prelude)."""
        position_kept = False if position_kept is None else bool(position_kept)
        start = start or POSITION
        if start not in STARTS:
            raise RecoveryRefused(f"start must be one of {', '.join(STARTS)}", 400)
        with self._lock:
            self._load()
            self._sync()
            record = dict(self._data["record"]) if self._data.get("record") else None
            if record is None:
                return None, None
            out: dict = {
                "origin": record["origin"],
                "path": record["path"],
                "name": os.path.basename(record["path"]),
                "pos": int(record["pos"]),
                "date": record.get("date"),
                "source": record.get("source"),
                "valid": False,
                "error": None,
                "status": "ready",
                "choices": {"position_kept": position_kept, "start": start},
                "warnings": [],
            }
            disk, fp, error, warnings = self._check(record)
            out["warnings"] = list(warnings)
            if fp is not None:
                out["size"] = fp["size"]
                out["progress"] = min(1.0, int(record["pos"]) / fp["size"]) if fp["size"] else 0.0
            if error:
                out["error"] = error
                return out, None
            out["valid"] = True
            flavour = self._flavour()
            analysis = self._analyse(record, disk, fp, flavour)
            if analysis is None:
                out["status"] = "analysing"
                return out, None
        at_pos, at_layer = analysis
        state = at_pos.state
        out.update(
            flavour=flavour,
            layer_z=at_pos.layer_z,
            layer_pos=at_pos.resume_layer_pos,
            z=state.z,
            max_z=state.max_z,
            z_range=[at_pos.z_low, at_pos.z_high],
            state=state.as_dict(),
            starts={POSITION: at_pos.end_offset, LAYER: at_layer.end_offset},
            line=_line_at(disk, at_layer.end_offset if start == LAYER else at_pos.end_offset),
        )
        try:
            prelude = self._prelude(at_pos, at_layer, position_kept, start, flavour, record.get("z"))
        except RecoveryError as refusal:
            out.update(prelude=None, prelude_error=str(refusal), start=None)
            return out, None
        out.update(
            prelude=prelude.lines,
            prelude_error=None,
            start=prelude.start,
            travel_z=prelude.travel_z,
            warnings=out["warnings"] + prelude.warnings,
        )
        volume = Volume.from_profile(self._profile() or {})
        return out, lambda: prelude_check(at_pos, volume, position_kept, record.get("z"), flavour)

    def _prelude(self, at_pos, at_layer, position_kept: bool, start: str, flavour: str, nozzle_z=None):
        values = self._settings() or {}
        profile = self._profile() or {}
        motion = MotionSettings(**motion_kwargs(values, profile))
        return build_prelude(
            at_pos,
            at_layer if start == LAYER else None,
            Volume.from_profile(profile),
            motion,
            settings_from(values),
            position_kept=position_kept,
            start=start,
            flavour=flavour,
            nozzle_z=nozzle_z,
        )

    def discard(self) -> bool:
        """Forget the recoverable print (and OctoPrint's data for it). Returns False if there was none."""
        with self._lock:
            self._load()
            self._sync()
            record = self._data.get("record")
            if not record:
                return False
            self._discarded = (
                record.get("origin"),
                record.get("path"),
                record.get("pos"),
                record.get("date"),
            )
            try:
                data = self._files.get_recovery_data()
                if data and data.get("origin") == record["origin"] and data.get("path") == record["path"]:
                    self._files.delete_recovery_data()
            except Exception as error:
                self._log.warning("SafePause: OctoPrint's recovery data not deleted: %s", error)
            self._data.update(record=None, correction=None)
            self._analyses.clear()
            self._save()
        self._emit("recovery_discarded", _public(record))
        return True

    # ------------------------------------------------------------------ recover

    def recover(
        self, position_kept: bool = False, start: str = POSITION, prelude: list | None = None
    ) -> dict:
        """Start the recoverable print at its start point with the prelude first. `prelude`: the lines
        to send instead of the built ones (the user edited them). Raises RecoveryRefused."""
        if not isinstance(position_kept, bool):
            raise RecoveryRefused("position_kept must be true or false", 400)
        if start not in STARTS:
            raise RecoveryRefused(f"start must be one of {', '.join(STARTS)}", 400)
        if prelude is not None:
            prelude = _check_lines(prelude)
        printer = self._printer
        if printer is None or not printer.is_operational():
            raise RecoveryRefused("the printer is not connected and operational")
        if not printer.is_ready():
            raise RecoveryRefused("a print is running or paused: finish or cancel it first")
        info, safety = self._recovery(position_kept, start)
        if info is None:
            raise RecoveryRefused("there is no print to recover")
        if not info["valid"]:
            raise RecoveryRefused(f"this print cannot be recovered: {info['error']}")
        if info["status"] == "analysing":
            raise RecoveryRefused("the print is still being analysed: try again in a moment")
        if info.get("prelude") is None:
            raise RecoveryRefused(f"no safe way to continue with these choices: {info['prelude_error']}")
        lines = prelude if prelude is not None else info["prelude"]
        refused = safety().check(lines)
        if refused:
            # the built prelude passes by construction (tests/unit/test_recovery.py): this is the user's
            raise RecoveryRefused(f"prelude refused by the safety check: {refused[0]}", 400)
        self._check_script()
        try:
            fingerprint = self._fingerprint(self._files.path_on_disk(info["origin"], info["path"]))
        except Exception:
            fingerprint = None  # (checked a moment ago) then the shadow just starts at the file start
        with self._lock:
            if self._recovering:
                raise RecoveryRefused("a recovery is already starting")
            self._recovering = True
            # Set before the start: the print's first events may come before _start returns.
            self._resumed = {
                "origin": info["origin"],
                "path": info["path"],
                "offset": int(info["start"]),
                "fingerprint": fingerprint,
            }
        try:
            self._start(info["origin"], info["path"], int(info["start"]), lines)
        except BaseException:
            with self._lock:
                self._resumed = None
            raise
        finally:
            with self._lock:
                self._recovering = False
        with self._lock:
            self._data.update(record=None, correction=None)
            self._analyses.clear()
            self._save()
        self._emit(
            "recovered",
            {"origin": info["origin"], "path": info["path"], "pos": info["pos"], "start": info["start"],
             "start_choice": start, "position_kept": position_kept},
        )  # fmt: skip
        self._log.info(
            "SafePause: recovering %s from byte %d (%s, position %s), %d prelude line(s)",
            info["path"],
            info["start"],
            start,
            "kept" if position_kept else "lost",
            len(lines),
        )
        return {"path": info["path"], "start": info["start"], "prelude": lines, "warnings": info["warnings"]}

    def _check_script(self) -> None:
        if self._script is None:
            return
        try:
            text = self._script("beforePrintStarted") or ""
        except Exception:
            return
        for raw in text.splitlines():
            word = raw.split(";", 1)[0].strip().split(None, 1)[0:1]
            if word and word[0].upper().startswith(_UNSAFE_SCRIPT_WORDS):
                raise RecoveryRefused(
                    f"OctoPrint's beforePrintStarted script has '{raw.strip()}', which would run before the "
                    "recovery prelude and move the head onto the print: remove it first"
                )

    def _start(self, origin: str, path: str, offset: int, lines: list) -> None:
        printer = self._printer
        tags = {"source:plugin", "plugin:safepause", TAG}
        try:
            printer.set_job_on_hold(True)
        except RuntimeError as error:
            raise RecoveryRefused(f"the printer connection is gone: {error}") from error
        started = False
        try:
            job = (printer.get_current_job() or {}).get("file") or {}
            if job.get("origin") != origin or job.get("path") != path:
                printer.select_file(path, False, printAfterSelect=False)
                job = (printer.get_current_job() or {}).get("file") or {}
                if job.get("origin") != origin or job.get("path") != path:
                    raise RecoveryRefused("OctoPrint could not select the file")
            printer.start_print(pos=offset, tags=tags)
            state = printer.get_state_id()
            if state not in ("STARTING", "PRINTING"):
                raise RecoveryRefused(f"OctoPrint did not start the print (it is {state.lower()})")
            started = True
            printer.commands(list(lines), tags=set(tags))
        except RecoveryRefused:
            raise
        except Exception as error:
            if started:
                # still held: no file line has gone out; do not let the print run without its prelude
                with contextlib.suppress(Exception):
                    printer.cancel_print(tags=tags)
            raise RecoveryRefused(f"starting the recovery failed: {error}") from error
        finally:
            with contextlib.suppress(RuntimeError):
                printer.set_job_on_hold(False)


def _public(record: dict) -> dict:
    return {k: record.get(k) for k in ("origin", "path", "pos", "date", "source", "z")}


def _check_lines(lines) -> list[str]:
    """The user's prelude as plain lines; RecoveryRefused (400) naming the first line that is not one
    plain command. Where the lines move the head is checked once the print's state is known."""
    if not isinstance(lines, (list, tuple)) or len(lines) > MAX_PRELUDE_LINES:
        raise RecoveryRefused(f"prelude must be a list of at most {MAX_PRELUDE_LINES} lines", 400)
    out = []
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            raise RecoveryRefused(f"prelude line {index + 1} is not text", 400)
        reason = plain_line_problem(line.strip())
        if reason:
            raise RecoveryRefused(f"prelude refused: {Problem(index, line.strip(), reason)}", 400)
        if line.strip():
            out.append(line.strip())
    return out


def _line_at(disk: str, offset: int) -> str | None:
    """The file's line at a byte offset, for the UI ("continues with ...")."""
    try:
        with open(disk, "rb") as fh:
            fh.seek(offset)
            raw = fh.readline(MAX_LINE * 4)
    except OSError:
        return None
    text = raw.decode("utf-8", "replace").splitlines()
    return text[0][:MAX_LINE] if text else None


def _thread(fn: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread
