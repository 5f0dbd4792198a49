"""What can be recovered: SafePause's own record, kept beside OctoPrint's recovery data.

OctoPrint 1.11 (read in the sources) writes its recovery data (``{origin, path, pos, date}``) when a
print is cancelled and when the connection closes while printing (``pos``: what the file reader had
*read*), and deletes it when a print finishes, when any print starts and when another file is selected.
It keeps no hash of the file, and nothing at all when the host itself loses power. So SafePause keeps
``recovery.json`` in its data folder:

* ``record``: the print that can be recovered (OctoPrint's data adopted when a print fails, or ours);
* ``live``: the running print's position, written every few seconds (for a host that dies with it);
* ``jobs``: each started print's fingerprint (size, mtime, hashes of its ends) and flavour, to tell
  later that the file has not changed since;
* ``correction``: where a SafePause hold that ended badly really stopped (OctoPrint's position lies
  after the held line, which never reached the printer), and whether a filament change had pulled the
  filament out (``unloaded``: the recovery loads it first).

The record stays until it is recovered, discarded, or a later print finishes normally. Writes are
atomic (a power loss leaves the old or the new file, never half of one).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable

STATE_FILE = "recovery.json"
KEEP_JOBS = 16


def _key(origin: str, path: str) -> str:
    return f"{origin}:{path}"


def public(record: dict) -> dict:
    """The record as events and the API show it."""
    return {k: record.get(k) for k in ("origin", "path", "pos", "date", "source", "z", "unloaded")}


def _held_at(item: dict, fix: dict) -> dict:
    """The record of a print whose SafePause hold ended badly: where the held line starts, the height
    the pause lifted the nozzle to, and whether a filament change had pulled the filament out."""
    return dict(item, pos=fix["pos"], source="hold", z=fix.get("z"), unloaded=bool(fix.get("unloaded")))


class RecoveryRecords:
    """Thread-safe; `port`: the PrinterPort (OctoPrint's own recovery data), `emit(name, payload)`: the
    plugin's events. `generation` changes whenever the record does (a cache key for analyses)."""

    def __init__(self, data_folder, port, *, clock: Callable[[], float], emit, logger: logging.Logger):
        self._dir = Path(data_folder)
        self._port = port
        self._clock = clock
        self._emit = emit
        self._log = logger
        self.lock = threading.RLock()
        self._data: dict = {"version": 1, "record": None, "live": None, "jobs": {}, "correction": None}
        self._discarded: tuple | None = None
        self._loaded = False
        self.generation = 0

    # ~~ persistence

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
        os.replace(tmp, target)

    def _set_record(self, record: dict | None) -> None:
        self._data["record"] = record
        self.generation += 1

    # ~~ what happens to prints

    def start(self) -> None:
        """At plugin startup: a print that was running when OctoPrint (or the host) died becomes the
        record, unless OctoPrint's own data for it is newer."""
        with self.lock:
            self._load()
            live = self._data.get("live")
            if live:
                self._data["live"] = None
                item = dict(live, source="safepause")
                fix = self._data.get("correction")
                if fix and (fix["origin"], fix["path"]) == (item["origin"], item["path"]):
                    # held when OctoPrint stopped (or was killed): the held line, the lifted nozzle
                    item = _held_at(item, fix)
                self._adopt(item)
            self._sync()
            self._save()

    def print_started(self, origin: str, path: str, job: dict | None) -> None:
        """A print started; `job`: {fingerprint, flavour} of a local file, None when none was taken."""
        with self.lock:
            self._load()
            self._data["correction"] = None  # a correction belongs to the print that ended
            if job is not None:
                jobs = self._data.setdefault("jobs", {})
                jobs.pop(_key(origin, path), None)
                jobs[_key(origin, path)] = dict(job, started=self._clock())
                while len(jobs) > KEEP_JOBS:
                    jobs.pop(next(iter(jobs)))
                self._data["live"] = {"origin": origin, "path": path, "pos": 0, "date": self._clock()}
            self._save()

    def print_done(self) -> None:
        """A print that ends normally closes the story of any earlier one."""
        with self.lock:
            self._load()
            self._data.update(live=None, correction=None)
            self._set_record(None)
            self._save()

    def print_ended(self, written: list[str] | None = None) -> None:
        """Failed, cancelled, disconnected, error: adopt what OctoPrint recorded. `written`: the last
        commands the connection wrote (which file lines reached the printer), kept with the record."""
        with self.lock:
            self._load()
            self._data["live"] = None
            self._sync(written)
            self._save()

    def note_progress(self, origin: str, path: str, pos: int, now: float) -> None:
        with self.lock:
            self._load()
            live = self._data.get("live") or {}
            if live.get("path") == path and live.get("pos") == pos:
                return
            self._data["live"] = {"origin": origin, "path": path, "pos": int(pos), "date": now}
            self._save()

    def cancelled(self, origin: str, path: str) -> None:
        """The user cancelled this print on purpose: it is not a print that died, whatever OctoPrint
        records for it (now or when a hold is released)."""
        with self.lock:
            self._load()
            job = (self._data.get("jobs") or {}).get(_key(origin, path))
            if job is not None:
                job["cancelled"] = True
            self._data.update(live=None, correction=None)
            record = self._data.get("record")
            if record and (record.get("origin"), record.get("path")) == (origin, path):
                self._set_record(None)
            self._save()

    def hold_released(self) -> None:
        """A SafePause hold ended well (resumed): its correction no longer applies."""
        with self.lock:
            self._load()
            if self._data.get("correction") is not None:
                self._data["correction"] = None
                self._save()

    def correct(self, origin: str, path: str, pos: int, z: float | None, unloaded: bool = False) -> bool:
        """A SafePause hold ended badly at `pos` (see RecoveryService.correct_position). Returns True when
        OctoPrint's data was rewritten now."""
        with self.lock:
            self._load()
            self._data["correction"] = {
                "origin": origin,
                "path": path,
                "pos": int(pos),
                "z": z,
                "unloaded": bool(unloaded),
                "date": self._clock(),
            }
            record = self._data.get("record")
            started = float(self.job(origin, path).get("started") or 0)
            # only the record of this print (not an older one of the same file, still offered)
            if (
                record
                and (record.get("origin"), record.get("path")) == (origin, path)
                and float(record.get("date") or 0) >= started
            ):
                self._set_record(_held_at(record, self._data["correction"]))
            done = self._apply_correction()
            self._save()
            return done

    # ~~ reading and ending the record

    def current(self) -> dict | None:
        """The recoverable print (a copy), after adopting anything newer OctoPrint wrote."""
        with self.lock:
            self._load()
            self._sync()
            record = self._data.get("record")
            return dict(record) if record else None

    def job(self, origin: str, path: str) -> dict:
        with self.lock:
            self._load()
            return dict((self._data.get("jobs") or {}).get(_key(origin, path)) or {})

    def discard(self) -> dict | None:
        """Forget the recoverable print (and OctoPrint's data for it); the record, or None."""
        with self.lock:
            record = self.current()
            if not record:
                return None
            self._discarded = (
                record.get("origin"),
                record.get("path"),
                record.get("pos"),
                record.get("date"),
            )
            try:
                data = self._port.recovery_data()
                if data and data.get("origin") == record["origin"] and data.get("path") == record["path"]:
                    self._port.delete_recovery_data()
            except Exception as error:
                self._log.warning("SafePause: OctoPrint's recovery data not deleted: %s", error)
            self._data["correction"] = None
            self._set_record(None)
            self._save()
            return record

    def recovered(self) -> None:
        """The record's print was started again: it is no longer something to recover."""
        with self.lock:
            self._data["correction"] = None
            self._set_record(None)
            self._save()

    # ~~ OctoPrint's data

    def _apply_correction(self) -> bool:
        fix = self._data.get("correction")
        if not fix:
            return False
        try:
            data = self._port.recovery_data()
        except Exception:
            data = None
        if not data or data.get("origin") != fix["origin"] or data.get("path") != fix["path"]:
            return False
        if data.get("pos") != fix["pos"]:
            self._port.save_recovery_data(fix["origin"], fix["path"], fix["pos"])
            self._log.info(
                "SafePause: recovery position of %s set to %d (the held line), not %s",
                fix["path"],
                fix["pos"],
                data.get("pos"),
            )
        return True

    def _sync(self, written: list[str] | None = None) -> None:
        """Adopt OctoPrint's recovery data when it is newer than the record (with any correction)."""
        self._apply_correction()
        try:
            data = self._port.recovery_data()
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
            item = _held_at(item, fix)
        else:
            record = self._data.get("record") or {}
            same = all(record.get(k) == item[k] for k in ("origin", "path", "pos", "date"))
            written = written or (record.get("written") if same else None)
            if written:
                item["written"] = list(written)
        self._adopt(item)

    def _adopt(self, item: dict) -> None:
        marker = (item.get("origin"), item.get("path"), item.get("pos"), item.get("date"))
        if marker == self._discarded:
            return
        record = self._data.get("record")
        if record and float(record.get("date") or 0) > float(item.get("date") or 0):
            return  # ours is newer (a later failure)
        job = (self._data.get("jobs") or {}).get(_key(item["origin"], item["path"])) or {}
        if job.get("cancelled"):
            return  # the user cancelled it: not offered (resume from a height still can)
        item["fingerprint"] = job.get("fingerprint")
        item.setdefault("flavour", job.get("flavour"))
        if record != item:
            self._set_record(item)
            self._emit("recovery_available", public(item))
