"""Where scheduled stops are kept and how they reach the running print (docs/scheduled-stops.md).

A file's stops live in its OctoPrint metadata (through the port), a print's own only in the controller's
`Schedule`. When a print starts, its file's stops are resolved against the file's layers (the checkpoint
index: built in a child process if it is not there yet, and the schedule set once it is) and handed to
the controller, whose queuing hook fires them. Pure: no OctoPrint import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable

from .schedule import (
    MAX_STOPS,
    Schedule,
    StopRefused,
    from_stored,
    layers_from_index,
    line_end,
    parse,
    resolve,
)

ENDING_EVENTS = frozenset(["PrintDone", "PrintFailed", "PrintCancelled", "Disconnected", "Error"])
_PRINTING = frozenset(["starting", "printing", "pausing", "paused", "resuming"])
ANALYSING = "the file's layers are still being read: ask again in a moment"
# How long a print whose file has stops waits for its layers at most (they are read at tens of MB/s, so
# only a huge file or a stuck reader gets here); then it goes on, and a stop it passes meanwhile is said.
LAYERS_WAIT_MAX = 60.0


class Analysing(StopRefused):
    """The file's layers are not known yet (its index is being built)."""

    def __init__(self):
        super().__init__(ANALYSING, 409)


class Scheduler:
    def __init__(
        self,
        port,
        controller,
        layers_of: Callable[[str, Callable[[], None] | None], tuple | None],
        logger: logging.Logger | None = None,
        layers_wait: float = LAYERS_WAIT_MAX,
    ):
        """`layers_of(disk, done)`: the file's (z, pos, offset) layers, or None while they are being read
        (then `done()` once they are)."""
        self._port = port
        self._controller = controller
        self._layers_of = layers_of
        self._log = logger or logging.getLogger(__name__)
        self._files_lock = threading.Lock()  # read-modify-write of a file's stops
        self._print: str | None = None  # the local file being printed, from PrintStarted to its end
        self._started_at = 0  # where OctoPrint started reading it (a recovered print: its offset)
        self._hold_lock = threading.Lock()
        self._held_for: str | None = None  # the print held until its layers are read (it has stops)
        self._layers_wait = layers_wait
        self._wait_timer: threading.Timer | None = None

    # ------------------------------------------------------------------ the running print

    def on_event(self, name: str, payload: dict | None) -> None:
        payload = payload or {}
        if name == "PrintStarted":
            self._release_layers_hold()
            self._controller.set_schedule(None)
            local = payload.get("origin") == "local" and payload.get("path")
            self._print = payload.get("path") if local else None
            self._started_at = self._port.file_position() or 0
            if self._print:
                self._start(self._print, hold=True)
        elif name in ENDING_EVENTS:
            self._print = None
            self._release_layers_hold()
            self._controller.set_schedule(None)

    def _start(self, path: str, hold: bool) -> None:
        """The running print's schedule: its file's stops, once its layers are known. With `hold`, a print
        whose file has stops but no index yet waits (OctoPrint's job hold) until its layers are read: a
        stop at the first layers is never missed because the index came late."""
        disk = self._port.disk_path("local", path)
        if disk is None:
            return
        stored = from_stored(self._file_stops(path), path)
        try:
            raw = self._layers_of(disk, lambda: self._layers_ready(path))
        except OSError as error:
            self._log.warning("SafePause: no scheduled stops for %s: %s", path, error)
            return
        if raw is None:
            if stored and hold:
                self._hold_until_layers(path)
            elif stored:
                self._controller.report(f"the scheduled stops of {path} do not apply: its layers could not be read")
            return  # _layers_ready comes back when the index is built
        schedule = Schedule(path, disk, layers_from_index(raw))
        read_pos = self._port.file_position()
        for stop in stored:
            try:
                resolved = schedule.add(stop, read_pos)
            except (StopRefused, OSError) as refused:
                self._not_applied(stop, refused, schedule.layers)
                continue
            self._log.info("SafePause: scheduled %s (file position %d)", resolved.describe(), resolved.layer.pos)
        if self._print == path:
            self._controller.set_schedule(schedule)

    def _not_applied(self, stop, refused, layers) -> None:
        """A file's stop that does not apply to its print: said in the status, unless the print was
        started (recovered) from above it."""
        try:
            below_start = resolve(stop, layers, None, lambda layer: 0).layer.pos < self._started_at
        except StopRefused:
            below_start = False
        if below_start:
            self._log.info("SafePause: the scheduled %s is below where this print started", stop.describe())
            return
        self._controller.report(f"the scheduled {stop.describe()} does not apply to this print: {refused}")

    def _layers_ready(self, path: str) -> None:
        try:
            if self._print == path and self._controller.schedule_path() is None:
                self._start(path, hold=False)
        finally:
            self._release_layers_hold()

    def _hold_until_layers(self, path: str) -> None:
        with self._hold_lock:
            if self._held_for is not None:
                return
            try:
                self._port.set_hold(True)
            except Exception as error:
                self._log.warning("SafePause: could not hold the print until its layers are read: %s", error)
                return
            self._held_for = path
            self._controller.set_waiting("layers")
            self._wait_timer = threading.Timer(self._layers_wait, self._release_layers_hold, kwargs={"late": True})
            self._wait_timer.daemon = True
            self._wait_timer.start()
        self._log.info("SafePause: the print of %s waits until its layers are read (it has scheduled stops)", path)

    def _release_layers_hold(self, late: bool = False) -> None:
        """The print goes on; `late`: from the wait's timer, which releases only its own wait."""
        with self._hold_lock:
            if late and threading.current_thread() is not self._wait_timer:
                return  # that wait ended already (and another may have begun)
            path, self._held_for = self._held_for, None
            if path is None:
                return
            if late:
                self._log.warning(
                    "SafePause: the layers of %s were not read within %g s: the print goes on without waiting",
                    path,
                    self._layers_wait,
                )
            timer, self._wait_timer = self._wait_timer, None
            if timer is not None:
                timer.cancel()
            self._controller.set_waiting(None)
            try:
                self._port.set_hold(False)
            except RuntimeError as error:
                self._log.info("SafePause: hold gone with the connection (%s)", error)
        self._log.info("SafePause: the print of %s goes on", path)

    # ------------------------------------------------------------------ requests

    def schedule(self, data: dict) -> dict:
        """A stop from a request (docs/scheduled-stops.md): {"stop": ..., "warning": ...}. ValueError for
        bad values, StopRefused when it cannot be set."""
        path = data.get("path")
        if path is None:
            stop = self._schedule_print(parse(data, path=None, scope="print"))
            return {"stop": self._as_running(stop), "warning": None}
        if not isinstance(path, str) or not path.strip():
            raise ValueError("'path' must be the path of a local file")
        stop = parse(data, path=path, scope="file")
        disk, layers = self._file_layers(path)
        resolved = resolve(stop, layers, None, lambda layer: line_end(disk, layer))
        with self._files_lock:
            stored = self._file_stops(path)
            if len(stored) >= MAX_STOPS:
                raise StopRefused(f"at most {MAX_STOPS} stops per file")
            self._port.save_file_stops(path, [*stored, stop.stored()])
        warning = None
        if self._controller.schedule_path() == path:
            try:
                return {"stop": self._as_running(self._controller.schedule_stop(stop)), "warning": None}
            except StopRefused as refused:
                warning = f"kept with the file, but not for the print running now: {refused}"
        return {"stop": resolved.public(), "warning": warning}

    def _as_running(self, stop) -> dict:
        """The stop as the running print's status shows it (how far away it is)."""
        return next((s for s in self._controller.stops() if s["id"] == stop.id), None) or stop.public()

    def _schedule_print(self, stop):
        if self._controller.schedule_path() is None:
            if self._port.state() not in _PRINTING:
                raise StopRefused("nothing is printing: give 'path' to set a stop on a file")
            job = self._port.job()
            if job is None or job.origin != "local":
                raise StopRefused("only prints streamed from OctoPrint can be stopped (this is an SD card print)")
            raise Analysing()
        return self._controller.schedule_stop(stop)

    def unschedule(self, stop_id, path: str | None = None) -> dict:
        if not isinstance(stop_id, str) or not stop_id:
            raise ValueError("'id' must be the id of a stop")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise ValueError("'path' must be the path of a local file")
        removed = self._controller.unschedule_stop(stop_id)
        if path is None and removed is not None and removed.scope == "file":
            path = removed.path  # the file's own stop: gone from the file too
        from_file = False
        if path is not None:
            with self._files_lock:
                stored = self._file_stops(path)
                kept = [item for item in stored if not (isinstance(item, dict) and item.get("id") == stop_id)]
                if len(kept) != len(stored):
                    self._port.save_file_stops(path, kept)
                    from_file = True
        if removed is None and not from_file:
            raise StopRefused(f"there is no stop {stop_id}", 404)
        return {"removed": stop_id}

    def file_schedule(self, path) -> dict:
        """A local file's layers and its own stops, for the "Pause at height..." dialog."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError("'schedule' must be the path of a local file")
        out = {"path": path, "status": "ready", "layers": [], "stops": []}
        try:
            disk, layers = self._file_layers(path)
        except Analysing:
            out["status"] = "analysing"
            out["stops"] = [stop.public() for stop in from_stored(self._file_stops(path), path)]
            return out
        size = max(1, layers[-1].pos) if layers else 1
        with contextlib.suppress(OSError):
            size = os.path.getsize(disk) or size
        out["layers"] = [
            {"layer": la.number, "z": la.z, "pos": la.pos, "progress": round(min(1.0, la.pos / size), 4)} for la in layers
        ]
        for stop in from_stored(self._file_stops(path), path):
            with contextlib.suppress(StopRefused, OSError):  # else shown without a layer: the file changed
                stop = resolve(stop, layers, None, lambda layer: line_end(disk, layer))
            out["stops"].append(stop.public())
        return out

    def stops(self, path: str | None = None) -> list:
        """The running print's stops ahead, or a file's own."""
        if path is None:
            return self._controller.stops()
        return self.file_schedule(path)["stops"]

    # ------------------------------------------------------------------ files

    def _file_layers(self, path: str):
        disk = self._port.disk_path("local", path)
        if disk is None:
            raise StopRefused(f"there is no local file {path!r}", 404)
        try:
            raw = self._layers_of(disk, None)
        except OSError as error:
            raise StopRefused(f"the file cannot be read: {error}") from error
        if raw is None:
            raise Analysing()
        return disk, layers_from_index(raw)

    def _file_stops(self, path: str) -> list:
        try:
            return list(self._port.file_stops(path))
        except Exception as error:
            self._log.warning("SafePause: the scheduled stops of %s could not be read: %s", path, error)
            return []

