"""Recovering a print that died: what can be recovered, its prelude, and starting it again.

Everything OctoPrint is reached through the PrinterPort (core/port.py): its recovery data, the files,
starting a print at a byte offset, the user's scripts. The parts: `records.py` (what can be recovered,
beside OctoPrint's own data), `index.py` (the state at a file position, from checkpoint indexes),
`prelude.py` (the G-code that brings the printer back, pure).

``port.start_print(offset)`` seeks OctoPrint's reader to a byte offset. To have the prelude go out
before the first file line, ``recover`` takes OctoPrint's job hold, starts the print (its
``beforePrintStarted`` script, line number reset and the file all wait behind the hold), checks that
the job really started, sends the prelude (while held it goes straight to the send queue, in order,
ahead of everything the job queues), and releases the hold. If the job did not start, nothing has been
sent; if sending fails, the job is cancelled while still held, so no file line ever goes out without its
prelude.

Without an index the first analysis of a large file is deferred to a background build (``status:
"analysing"``). The same index seeds the controller's shadow tracker when the recovered print runs
(``shadow_start``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from typing import Any, Callable

from ..gcode import PROBING_COMMANDS, StateTracker, fastscan, parse_line
from ..safety import Problem, plain_line_problem
from ..sequences import MotionSettings, Volume
from ..settings_schema import change_settings, motion_kwargs
from . import delivered as delivery
from .index import Fingerprints, IndexStore
from .prelude import (
    LAYER,
    POSITION,
    STARTS,
    TAG,
    RecoveryError,
    build_prelude,
    declare_z,
    prelude_check,
    settings_from,
    touch_off_start,
)
from .records import RecoveryRecords, public

LIVE_INTERVAL = 10.0  # s between writes of the running print's position
MAX_PRELUDE_LINES = 300
MAX_LINE = 200
MAX_JOG = 10.0  # mm per touch-off jog
EPS_JOG = 1e-6
BED_COOLED_BY = 15.0  # °C below the print's bed temperature that deserve a warning
ENDED = ("PrintFailed", "PrintCancelled", "Disconnected", "Error")


class RecoveryRefused(Exception):
    """A request that cannot be served now; `status` is the HTTP status the API should answer."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class RecoveryService:
    def __init__(
        self,
        data_folder,
        port,
        *,
        flavour: Callable[[], str] = lambda: "marlin",
        settings: Callable[[], dict] = dict,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        spawn: Callable[[Callable[[], None], str], Any] | None = None,
        emit: Callable[[str, dict], None] | None = None,
        live_interval: float = LIVE_INTERVAL,
    ):
        self._port = port
        self._flavour = flavour
        self._settings = settings
        self._log = logger or logging.getLogger(__name__)
        self._clock = clock
        self._emit = emit or (lambda name, payload: None)
        self._live_interval = live_interval
        self._records = RecoveryRecords(data_folder, port, clock=clock, emit=self._emit, logger=self._log)
        self._indexes = IndexStore(data_folder, spawn=spawn or _thread, logger=self._log)
        self._fingerprint = Fingerprints()
        self._lock = threading.Lock()
        self._recovering = False
        self._resumed: dict | None = None  # the print recover() started: origin, path, offset, fingerprint
        self._last_live = 0.0
        self._firmware_cancel = False  # OctoPrint cancels on a firmware error too: not the user's doing
        self._touch: dict | None = None  # a touch-off under way (see touch_off)
        self._touch_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle and events

    def start(self) -> None:
        """At plugin startup (see RecoveryRecords.start)."""
        self._records.start()

    def stop(self) -> None:
        self._indexes.stop()

    def on_event(self, event: str, payload: dict | None) -> None:
        """OctoPrint events: PrintStarted, PrintDone, PrintFailed, PrintCancelling, PrintCancelled,
        Disconnected, Error."""
        payload = payload or {}
        with self._lock:
            resumed = self._resumed
            if event in ("PrintDone", *ENDED) or (
                event == "PrintStarted"
                and resumed
                and (payload.get("origin"), payload.get("path")) != (resumed["origin"], resumed["path"])
            ):
                self._resumed = None  # the recovered print ended, or another one started
        if event == "PrintCancelling":
            self._firmware_cancel = bool(payload.get("firmwareError"))
        elif event == "PrintCancelled" and not self._firmware_cancel:
            self._records.cancelled(payload.get("origin"), payload.get("path"))
        if event == "PrintStarted":
            self._on_print_started(payload.get("origin"), payload.get("path"))
        elif event == "PrintDone":
            self._records.print_done()
        elif event in ENDED:
            try:
                written = [] if event == "PrintCancelled" else self._port.written_commands()
            except Exception:
                written = []
            self._records.print_ended(written)

    def _on_print_started(self, origin: str | None, path: str | None) -> None:
        job = None
        disk = self._port.disk_path(origin, path) if origin == "local" and path else None
        if disk is not None:
            try:
                job = {"fingerprint": fastscan.fingerprint(disk), "flavour": self._flavour()}
            except OSError as error:
                self._log.warning("SafePause: no fingerprint of %s: %s", path, error)
        self._records.print_started(origin, path, job)
        self._last_live = 0.0
        if job is not None:
            self._indexes.build(disk, job["fingerprint"], job["flavour"], self._tools())

    def note_progress(self, origin: str, path: str, pos: int | None) -> None:
        """The running print's file position, from whoever polls it (the controller, every second);
        written at most every `live_interval` seconds, so that a host that dies leaves a position."""
        if origin != "local" or not path or pos is None:
            return
        now = self._clock()
        if now - self._last_live < self._live_interval:
            return
        self._last_live = now
        self._records.note_progress(origin, path, pos, now)

    def correct_position(
        self, origin: str, path: str, pos: int, z: float | None = None, unloaded: bool = False
    ) -> bool:
        """A SafePause hold ended in a disconnect, error or cancel: OctoPrint recorded a position after
        the line(s) the hold suppressed, which never reached the printer. Point the recovery at `pos`
        (where the suppressed line starts) instead: now, and again whenever OctoPrint writes its data for
        this print later (a cancel during a hold records it only when the hold is released). `z`: the
        logical Z the pause had lifted the nozzle to (plan.travel_z), when its lines went out; a
        position-lost recovery declares that instead of guessing from the file. `unloaded`: a filament
        change had pulled the filament out (and not loaded the new one): the recovery loads it first.
        Returns True when OctoPrint's data was rewritten now."""
        return self._records.correct(origin, path, pos, None if z is None else float(z), unloaded)

    def hold_released(self) -> None:
        """A SafePause hold was resumed: the position it recorded no longer applies."""
        self._records.hold_released()

    def _tools(self) -> int:
        """How many tools OctoPrint lets through (it drops T<n> beyond the profile's extruders): the
        tracker's `tools`, as the controller's shadow has it."""
        return Volume.tools_of(self._port.profile())

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
            disk = self._port.disk_path(origin, path)
            if (
                disk is None
                or resumed["fingerprint"] is None
                or self._fingerprint(disk) != resumed["fingerprint"]
            ):
                return None
            tracker = self._indexes.tracker_at(
                disk, resumed["fingerprint"], resumed["offset"], flavour, tools
            )
        except Exception as error:  # the shadow then replays the file; never fail the print for it
            self._log.warning("SafePause: no shadow start for %s: %s", path, error)
            return None
        return None if tracker is None else (tracker, resumed["offset"])

    # ------------------------------------------------------------------ what can be recovered

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
        disk = self._port.disk_path(record["origin"], record["path"])
        if disk is None:
            return None, None, "the file no longer exists", []
        try:
            fp = self._fingerprint(disk)
        except OSError as error:
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

    def get_recovery(
        self, position_kept: bool | None = None, start: str | None = None, power_lost: bool | None = None
    ) -> dict | None:
        """The print that can be recovered, with the prelude for the given choices (defaults: position
        lost, from the recorded position, the printer stayed on), or None when there is nothing to
        recover.

        ``valid`` False with ``error`` when it cannot be recovered (file gone or changed, SD print);
        ``status`` "analysing" while the state is being rebuilt in the background (call again)."""
        return self._recovery(position_kept, start, power_lost)[0]

    def _recovery(
        self, position_kept: bool | None, start: str | None, power_lost: bool | None = None
    ) -> tuple[dict | None, Callable | None, object]:
        """(get_recovery's answer, a function that returns the safety check seeded where the prelude
        starts, or None while there is no prelude, the scan the answer stands on, or None)."""
        position_kept = False if position_kept is None else bool(position_kept)
        power_lost = False if power_lost is None else bool(power_lost)
        start = start or POSITION
        if start not in STARTS:
            raise RecoveryRefused(f"start must be one of {', '.join(STARTS)}", 400)
        generation = self._records.generation
        record = self._records.current()
        if record is None:
            return None, None, None
        out: dict = {
            "origin": record["origin"],
            "path": record["path"],
            "name": os.path.basename(record["path"]),
            "pos": int(record["pos"]),
            "date": record.get("date"),
            "source": record.get("source"),
            "unloaded": bool(record.get("unloaded")),  # a filament change had pulled the filament out
            "valid": False,
            "error": None,
            "status": "ready",
            "choices": {"position_kept": position_kept, "start": start, "power_lost": power_lost},
            "touch_off": self._touch_public(),
            "warnings": [],
        }
        disk, fp, error, warnings = self._check(record)
        out["warnings"] = list(warnings)
        if fp is not None:
            out["size"] = fp["size"]
            out["progress"] = min(1.0, int(record["pos"]) / fp["size"]) if fp["size"] else 0.0
        if error:
            out["error"] = error
            return out, None, None
        out["valid"] = True
        flavour, tools = self._flavour(), self._tools()
        analysis = self._indexes.analyse(disk, fp, int(record["pos"]), flavour, tools, generation)
        if analysis is not None:
            delivered = self._delivered(record, disk, analysis[0])
            out.update(read_pos=int(record["pos"]), pos=delivered, delivered=delivered is not None)
            if delivered is not None and delivered != int(record["pos"]):
                analysis = self._indexes.analyse(disk, fp, delivered, flavour, tools, generation)
        if analysis is None:
            out["status"] = "analysing"
            return out, None, None
        at_pos, at_layer = analysis
        cooled = self._bed_cooled(at_pos.state.bed_temp)
        if cooled:
            out["warnings"].append(cooled)
        if out["pos"] is None:
            out["pos"] = int(record["pos"])
        out["progress"] = min(1.0, out["pos"] / fp["size"]) if fp["size"] else 0.0
        nozzle_z = record.get("z")  # a hold lifted it there, power or not
        if nozzle_z is None and not power_lost:
            if out["delivered"]:
                nozzle_z = at_pos.state.z  # the firmware finished the last line it got: exactly there
            else:
                out["warnings"].append(
                    "which file lines reached the printer is not known: the nozzle height is taken from "
                    "the last lines read, as after a power loss"
                )
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
        profile = self._port.profile() or {}
        try:
            prelude = self._prelude(at_pos, at_layer, position_kept, start, flavour, nozzle_z, profile, out["unloaded"])
        except RecoveryError as refusal:
            out.update(prelude=None, prelude_error=str(refusal), start=None)
            return out, None, None
        out.update(
            prelude=prelude.lines,
            prelude_error=None,
            start=prelude.start,
            travel_z=prelude.travel_z,
            warnings=out["warnings"] + prelude.warnings,
        )
        volume = Volume.from_profile(profile)
        return out, lambda: prelude_check(at_pos, volume, position_kept, nozzle_z, flavour), at_pos

    def _bed_cooled(self, target: float | None) -> str | None:
        """A warning when the bed is far below the print's temperature now: the part may have come loose."""
        if not target or target <= 0:
            return None
        try:
            actual = float(((self._port.temperatures() or {}).get("bed") or {}).get("actual"))
        except Exception:  # no reading (not connected): nothing to say
            return None
        if actual >= target - BED_COOLED_BY:
            return None
        return (
            f"the bed has cooled to {actual:.0f} °C (the print used {target:.0f} °C): the part may have come "
            "loose; check that it still sits firmly before recovering"
        )

    def _delivered(self, record: dict, disk: str, at_read) -> int | None:
        """Where the file lines that reached the printer end (OctoPrint's position), or None: the held
        line for a hold; else the read position less what was read but never written."""
        if record.get("source") == "hold":
            return int(record["pos"])
        written = record.get("written")
        if not written:
            return None
        try:
            unsent = delivery.unsent_bytes(delivery.file_lines_before(disk, at_read.end_offset), written)
        except OSError:
            return None
        return None if unsent is None else int(record["pos"]) - unsent

    def _prelude(
        self, at_pos, at_layer, position_kept: bool, start: str, flavour: str, nozzle_z, profile: dict, unloaded=False
    ):
        values = self._settings() or {}
        motion = MotionSettings(**motion_kwargs(values, profile))
        load = change_settings(values, profile) if unloaded else None
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
            load=load,
        )

    def discard(self) -> bool:
        """Forget the recoverable print (and OctoPrint's data for it). Returns False if there was none."""
        record = self._records.discard()
        if record is None:
            return False
        self._emit("recovery_discarded", public(record))
        return True

    # ------------------------------------------------------------------ touch-off after a power loss

    def touch_off(self, action: str, distance: float | None = None) -> dict:
        """Find the height by hand after a power loss. "start": heat, declare Z at the lowest it can be,
        lift clear, home X and Y, go above the last printed point. "jog" `distance` mm (negative: down,
        in steps the user chooses) until the nozzle just touches the print. "confirm": that is the top
        of the last printed layer: the print continues with the layer after it. "cancel": lift and stop.
        Returns the touch-off's state; raises RecoveryRefused."""
        with self._touch_lock:  # one step at a time: two jogs at once would lose track of the height
            return self._touch_step(action, distance)

    def _touch_step(self, action: str, distance) -> dict:
        if action == "start":
            return self._touch_start()
        touch = self._touch
        if touch is None:
            raise RecoveryRefused("no touch-off is under way: start one first")
        if self._port.state() != "operational":
            self._touch = None
            raise RecoveryRefused("the printer is no longer idle and connected: the touch-off ended")
        motion = self._motion()
        if action == "jog":
            if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not math.isfinite(distance):
                raise RecoveryRefused("distance must be a number of mm", 400)
            if not 0 < abs(distance) <= MAX_JOG:
                raise RecoveryRefused(f"a jog is at most {MAX_JOG:g} mm, and not 0", 400)
            target = touch["z"] + float(distance)
            if target < touch["floor"] - EPS_JOG:
                raise RecoveryRefused(
                    f"Z{target:g} is below where the top of the print can be (Z{touch['floor']:g}): check the "
                    "nozzle, it should have touched by now"
                )
            if target > touch["top"] + EPS_JOG:
                raise RecoveryRefused(f"Z{target:g} is above the build volume", 400)
            self._port.send(["G91", f"G1 Z{distance:g} F{motion.z_speed * 60:g}", "G90"], {TAG})
            touch["z"] = round(target, 4)
            return self._touch_public()
        if action == "cancel":
            lift = min(motion.lift, max(0.0, touch["top"] - touch["z"]))
            self._touch = None
            if lift > 0:
                self._port.send(["G91", f"G1 Z{lift:g} F{motion.z_speed * 60:g}", "G90"], {TAG})
            return {"active": False}
        if action == "confirm":
            return self._touch_confirm(touch)
        raise RecoveryRefused("action must be one of start, jog, confirm, cancel", 400)

    def _motion(self) -> MotionSettings:
        return MotionSettings(**motion_kwargs(self._settings() or {}, self._port.profile() or {}))

    def _touch_public(self) -> dict | None:
        touch = self._touch
        if touch is None:
            return None
        return {"active": True, "z": touch["z"], "floor": touch["floor"], "layer_z": touch["layer_z"],
                "path": touch["path"]}  # fmt: skip

    def _touch_start(self) -> dict:
        if self._port.state() != "operational":
            raise RecoveryRefused("the printer must be connected and idle")
        info, _, at_pos = self._recovery(False, POSITION, True)
        _usable(info)
        profile = self._port.profile() or {}
        volume, motion, flavour = Volume.from_profile(profile), self._motion(), self._flavour()
        try:
            start = touch_off_start(at_pos, volume, motion, settings_from(self._settings() or {}), flavour=flavour)
        except RecoveryError as error:
            raise RecoveryRefused(f"no safe touch-off: {error}") from error
        refused = prelude_check(at_pos, volume, False, None, flavour).check(start.lines)
        if refused:
            raise RecoveryRefused(f"touch-off refused by the safety check: {refused[0]}")
        self._port.send(start.lines, {TAG})
        self._touch = {
            "path": info["path"],
            "origin": info["origin"],
            "at_pos": at_pos,
            "z": round(start.z, 4),
            "floor": round(start.floor, 4),
            "layer_z": at_pos.layer_z,
            "top": start.top,
        }
        return dict(self._touch_public(), lines=start.lines)

    def _touch_confirm(self, touch: dict) -> dict:
        at_pos, top = touch["at_pos"], touch["layer_z"]
        if top is None:
            raise RecoveryRefused("the layer where the print stopped is unknown")
        disk = self._port.disk_path(touch["origin"], touch["path"])
        if disk is None:
            raise RecoveryRefused("the file no longer exists")
        fp = self._fingerprint(disk)
        flavour, tools = self._flavour(), self._tools()
        layers = self._indexes.layers(disk, fp, flavour, tools)
        if layers is None:
            raise RecoveryRefused("the file's layers are still being found: confirm again in a moment")
        following = next((layer for layer in layers if layer[0] > top + fastscan.LAYER_MATCH * 5), None)
        if following is None:
            raise RecoveryRefused("the print stopped in its last layer: there is no layer after it")
        at_next = self._indexes.analyse(disk, fp, int(following[1]), flavour, tools, -1)
        if at_next is None:
            raise RecoveryRefused("the file is still being analysed: confirm again in a moment")
        profile = self._port.profile() or {}
        volume = Volume.from_profile(profile)
        declare = declare_z(top, float((at_pos.state.offsets or {}).get("Z") or 0.0), flavour)
        try:
            prelude = build_prelude(
                at_pos, at_next[0], volume, self._motion(), settings_from(self._settings() or {}),
                position_kept=True, start=LAYER, flavour=flavour, nozzle_z=top,
            )  # fmt: skip
        except RecoveryError as error:
            raise RecoveryRefused(f"no safe way to continue: {error}") from error
        refused = prelude_check(at_pos, volume, True, top, flavour).check(prelude.lines)
        if refused:
            raise RecoveryRefused(f"prelude refused by the safety check: {refused[0]}")
        self._check_script()
        lines = [declare, *prelude.lines]
        self._touch = None
        self._start(touch["origin"], touch["path"], at_next[0].end_offset, lines)
        self._records.recovered()
        self._emit(
            "recovered",
            {"origin": touch["origin"], "path": touch["path"], "pos": int(following[1]),
             "start": at_next[0].end_offset, "start_choice": "touch_off", "position_kept": True},
        )  # fmt: skip
        return {"active": False, "start": at_next[0].end_offset, "layer_z": following[0], "prelude": lines}

    def layers_of(self, disk: str, done: Callable[[], None] | None = None):
        """A file's layers ((z, pos, offset) from where it extrudes) for the flavour and tools the shadow
        uses, or None while its index is being built (`done()` once it is)."""
        return self._indexes.layers(disk, self._fingerprint(disk), self._flavour(), self._tools(), done)

    # ------------------------------------------------------------------ any file, from a height

    def from_height(
        self, path: str, z: float | None = None, position_kept: bool | None = None, power_lost: bool | None = None
    ) -> dict:
        """A local file's layers (from where it extrudes: z-hop travel is no layer) and, with `z`, the
        prelude to print it on from the first layer at Z >= z - 0.005 (every deposit from there on,
        once, in file order; none below). For prints that died without a record, or were cancelled.
        Raises RecoveryRefused (404: no such file, 400: bad values)."""
        return self._from_height(path, z, position_kept, power_lost)[0]

    def _from_height(self, path, z, position_kept, power_lost) -> tuple[dict, Callable | None]:
        if not isinstance(path, str) or not path.strip():
            raise RecoveryRefused("path must be the path of a local file", 400)
        if z is not None and (isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z)):
            raise RecoveryRefused("z must be a number (mm)", 400)
        position_kept = True if position_kept is None else bool(position_kept)
        disk = self._port.disk_path("local", path)
        if disk is None:
            raise RecoveryRefused(f"there is no local file {path!r}", 404)
        try:
            fp = self._fingerprint(disk)
        except OSError as error:
            raise RecoveryRefused(f"the file cannot be read: {error}", 409) from error
        flavour, tools = self._flavour(), self._tools()
        out: dict = {
            "origin": "local",
            "path": path,
            "name": os.path.basename(path),
            "size": fp["size"],
            "status": "ready",
            "layers": [],
            "choices": {"z": z, "position_kept": position_kept, "power_lost": bool(power_lost)},
            "warnings": [],
        }
        layers = self._indexes.layers(disk, fp, flavour, tools)
        if layers is None:
            out["status"] = "analysing"
            return out, None
        size = fp["size"] or 1
        out["layers"] = [
            {"z": lz, "pos": pos, "progress": round(min(1.0, pos / size), 4)} for lz, pos, _off in layers
        ]
        if z is None:
            return out, None
        chosen = next((layer for layer in layers if layer[0] >= float(z) - fastscan.LAYER_MATCH), None)
        if chosen is None:
            raise RecoveryRefused(f"the file has no layer at or above Z{float(z):g}", 400)
        if not position_kept:
            raise RecoveryRefused(
                "from a height the printer must know where its head is: home it (Z only where the nozzle "
                "clears the part) and choose that it kept its coordinates",
                400,
            )
        at_start = self._indexes.analyse(disk, fp, int(chosen[1]), flavour, tools, -1)
        if at_start is None:
            out["status"] = "analysing"
            return out, None
        at_pos = at_start[0]
        out.update(
            layer_z=chosen[0],
            pos=int(chosen[1]),
            start=at_pos.end_offset,
            progress=round(min(1.0, int(chosen[1]) / size), 4),
            state=at_pos.state.as_dict(),
            max_z=at_pos.state.max_z,
            line=_line_at(disk, at_pos.end_offset),
        )
        cooled = self._bed_cooled(at_pos.state.bed_temp)
        if cooled:
            out["warnings"].append(cooled)
        profile = self._port.profile() or {}
        try:
            prelude = self._prelude(at_pos, at_pos, True, POSITION, flavour, None, profile)
        except RecoveryError as refusal:
            out.update(prelude=None, prelude_error=str(refusal))
            return out, None
        out.update(prelude=prelude.lines, prelude_error=None, travel_z=prelude.travel_z)
        out["warnings"] += prelude.warnings
        volume = Volume.from_profile(profile)
        return out, lambda: prelude_check(at_pos, volume, True, None, flavour)

    # ------------------------------------------------------------------ recover

    def recover(
        self,
        position_kept: bool | None = None,
        start: str = POSITION,
        prelude: list | None = None,
        power_lost: bool = False,
        path: str | None = None,
        z: float | None = None,
    ) -> dict:
        """Start the recoverable print at its start point with the prelude first. `prelude`: the lines
        to send instead of the built ones (the user edited them). With `path` and `z`: that local file
        from that height instead (see from_height). Raises RecoveryRefused."""
        for name, value in (("position_kept", position_kept), ("power_lost", power_lost)):
            if value is not None and not isinstance(value, bool):
                raise RecoveryRefused(f"{name} must be true or false", 400)
        if start not in STARTS:
            raise RecoveryRefused(f"start must be one of {', '.join(STARTS)}", 400)
        if prelude is not None:
            prelude = _check_lines(prelude)
        state = self._port.state()
        if state in ("offline", "error"):
            raise RecoveryRefused("the printer is not connected and operational")
        if state != "operational":
            raise RecoveryRefused("a print is running or paused: finish or cancel it first")
        if path is not None or z is not None:
            if path is None or z is None:
                raise RecoveryRefused("path and z go together: a local file and the height to resume from", 400)
            if start != POSITION:
                raise RecoveryRefused("start applies to a recorded print; from a height the layer is the start", 400)
            info, safety = self._from_height(path, z, position_kept, power_lost)
            info["valid"] = True
        else:
            info, safety, _ = self._recovery(position_kept, start, power_lost)
        _usable(info)
        if info.get("prelude") is None:
            raise RecoveryRefused(f"no safe way to continue with these choices: {info['prelude_error']}")
        lines = prelude if prelude is not None else info["prelude"]
        refused = safety().check(lines)
        if refused:
            # the built prelude passes by construction (tests/unit/test_recovery.py): this is the user's
            raise RecoveryRefused(f"prelude refused by the safety check: {refused[0]}", 400)
        self._check_script()
        disk = self._port.disk_path(info["origin"], info["path"])
        try:
            fingerprint = self._fingerprint(disk) if disk else None
        except OSError:
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
        if path is None:
            self._records.recovered()
        self._emit(
            "recovered",
            {"origin": info["origin"], "path": info["path"], "pos": info["pos"], "start": info["start"],
             "start_choice": "height" if path is not None else start, "position_kept": position_kept},
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
        try:
            text = self._port.script("beforePrintStarted") or ""
        except Exception:
            return
        # homing and probing would move the head (onto the print) before the prelude has run
        moving = PROBING_COMMANDS[self._flavour()] | {"G28"}
        for raw in text.splitlines():
            if parse_line(raw).command in moving:
                raise RecoveryRefused(
                    f"OctoPrint's beforePrintStarted script has '{raw.strip()}', which would run before the "
                    "recovery prelude and move the head onto the print: remove it first"
                )

    def _start(self, origin: str, path: str, offset: int, lines: list) -> None:
        port = self._port
        tags = {"source:plugin", "plugin:safepause", TAG}
        try:
            port.set_hold(True)
        except RuntimeError as error:
            raise RecoveryRefused(f"the printer connection is gone: {error}") from error
        started = False
        try:
            state = port.start_print(origin, path, offset, tags)
            if state not in ("starting", "printing"):
                raise RecoveryRefused(f"OctoPrint did not start the print (it is {state})")
            started = True
            port.send(list(lines), set(tags))
        except RecoveryRefused:
            raise
        except Exception as error:
            if started:
                # still held: no file line has gone out; do not let the print run without its prelude
                with contextlib.suppress(Exception):
                    port.cancel(tags)
            raise RecoveryRefused(f"starting the recovery failed: {error}") from error
        finally:
            with contextlib.suppress(RuntimeError):
                port.set_hold(False)


def _usable(info: dict | None) -> dict:
    """The answer, if something can be recovered from it now; else RecoveryRefused saying why."""
    if info is None:
        raise RecoveryRefused("there is no print to recover")
    if not info["valid"]:
        raise RecoveryRefused(f"this print cannot be recovered: {info['error']}")
    if info["status"] == "analysing":
        raise RecoveryRefused("the print is still being analysed: try again in a moment")
    return info


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
