"""RecoveryService against small fakes of OctoPrint's file manager and printer (the edge this test owns).

The fakes copy the behaviour of octoprint 1.11 that the service relies on, read in the sources:

* filemanager/__init__.py: save_recovery_data stores {origin, path (path in storage), pos, date=time()};
  get_recovery_data returns None without a file and deletes one of the wrong shape; file_exists,
  path_on_disk (no storage for "sdcard").
* printer/standard.py: select_file deletes the recovery data of another file and does nothing while
  busy; start_print does nothing unless operational and idle with a file selected, deletes the recovery
  data, and (comm.startPrint) queues M110 and the beforePrintStarted script as part of the job, seeks the
  reader to `pos`, sets STARTING; commands() sent while the job is held (or while not printing) go
  straight to the send queue; job-queue lines and file lines wait for the hold; on disconnect while busy
  and on cancel comm._recordFilePosition saves the reader's position.
* The file reader is OctoPrint's own PrintingGcodeFileInformation, so seek semantics are the real ones.
"""

from __future__ import annotations

import codecs
import json
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest
from octoprint.util.comm import PrintingGcodeFileInformation

from octoprint_safepause.adapter.octoprint_port import OctoPrintPort
from octoprint_safepause.core.gcode import StateTracker, fastscan, replay_file
from octoprint_safepause.core.gcode.follower import FileFollower
from octoprint_safepause.core.recovery import index as recovery_index
from octoprint_safepause.core.recovery.prelude import TAG
from octoprint_safepause.core.recovery.service import RecoveryRefused, RecoveryService

from .independent_model import corpus_files
from .test_replay import octoprint_lines

PRINTING_STATES = ("STARTING", "PRINTING", "CANCELLING", "PAUSING", "RESUMING", "FINISHING")


class FakeFileManager:
    def __init__(self, base: Path, data: Path):
        self.base = base
        self.recovery_file = data / "print_recovery_data.yaml"
        self.clock = time.time

    def path_in_storage(self, location, path):
        path = str(path)
        if path.startswith(str(self.base) + "/"):
            path = path[len(str(self.base)) + 1 :]
        return path

    def path_on_disk(self, location, path):
        if location != "local":
            raise LookupError(f"No storage configured for destination {location}")
        return str(self.base / path)

    def file_exists(self, location, path):
        return location == "local" and (self.base / path).is_file()

    def save_recovery_data(self, location, path, pos):
        data = {
            "origin": location,
            "path": self.path_in_storage(location, path),
            "pos": pos,
            "date": self.clock(),
        }
        self.recovery_file.write_text(json.dumps(data))

    def delete_recovery_data(self):
        if self.recovery_file.exists():
            self.recovery_file.unlink()

    def get_recovery_data(self):
        if not self.recovery_file.exists():
            return None
        try:
            data = json.loads(self.recovery_file.read_text())
            if not isinstance(data, dict) or not all(k in data for k in ("origin", "path", "pos", "date")):
                raise ValueError("Invalid recovery data structure")
            return data
        except ValueError:
            self.delete_recovery_data()
            return None


class FakePrinter:
    def __init__(self, files: FakeFileManager):
        self.files = files
        self.state = "OPERATIONAL"
        self.hold = 0
        self.connected = True
        self.job = None  # (origin, path)
        self.reader = None
        self.wire: list[tuple[str, str]] = []  # (source, line) in the order the printer gets them
        self.job_queue: list[str] = []
        self.before_print_started: list[str] = []
        self.ignore_start = False
        self.fail_commands = False
        self.cancelled = False
        self.temperatures = {}

    def get_current_temperatures(self):
        return self.temperatures

    # state
    def get_state_id(self):
        return self.state if self.connected else "OFFLINE"

    def is_operational(self):
        return self.connected and self.state not in ("OFFLINE", "ERROR", "CLOSED")

    def is_printing(self):
        return self.state in PRINTING_STATES

    def is_ready(self):
        return self.is_operational() and self.state == "OPERATIONAL"

    def get_current_job(self):
        if self.job is None:
            return {"file": {"name": None, "path": None, "origin": None, "size": None}}
        origin, path = self.job
        return {"file": {"name": Path(path).name, "path": path, "origin": origin, "size": 1}}

    # hold
    def set_job_on_hold(self, value, blocking=True):
        if not self.connected:
            raise RuntimeError("No connection to the printer")
        self.hold = self.hold + 1 if value else max(0, self.hold - 1)
        if not self.hold:
            self._continue()
        return True

    # job
    def select_file(self, path, sd, printAfterSelect=False, user=None, pos=None, **kwargs):
        if self.state != "OPERATIONAL":
            return
        data = self.files.get_recovery_data()
        if data and (data["origin"] != ("sdcard" if sd else "local") or data["path"] != path):
            self.files.delete_recovery_data()
        self.job = ("sdcard" if sd else "local", path)
        self.reader = PrintingGcodeFileInformation(self.files.path_on_disk("local", path))

    def start_print(self, pos=None, user=None, **kwargs):
        if self.ignore_start or not self.is_operational() or self.is_printing() or self.job is None:
            return
        self.files.delete_recovery_data()
        self.reader.start()
        self.state = "STARTING"
        self.job_queue += ["M110 N0"] + list(self.before_print_started)
        if pos is not None and isinstance(pos, int) and pos > 0:
            self.reader.seek(pos)
        self._continue()

    def commands(self, commands, tags=None, force=False, **kwargs):
        if self.fail_commands:
            raise OSError("serial port gone")
        assert TAG in (tags or set())
        for line in commands:
            if self.is_printing() and not self.hold:
                self.job_queue.append(line)  # the command queue: between file lines (simplified)
            else:
                self.wire.append(("command", line))

    def cancel_print(self, tags=None, **kwargs):
        self.cancelled = True
        self.files.save_recovery_data(*self.job, self.reader.getFilepos())
        self.state = "OPERATIONAL"

    def _continue(self, file_lines=3):
        if self.hold or self.state not in ("STARTING", "PRINTING"):
            return
        while self.job_queue:
            self.wire.append(("job", self.job_queue.pop(0)))
        self.state = "PRINTING"
        for _ in range(file_lines):
            line, _pos, _n = self.reader.getNext()
            if line is None:
                break
            self.wire.append(("file", line))

    # what OctoPrint does when the connection drops while printing
    def disconnect(self):
        if self.is_printing():
            self.files.save_recovery_data(*self.job, self.reader.getFilepos())
        self.connected = False
        self.state = "OFFLINE"


class FakeProfiles:
    def __init__(self, current):
        self.current = current

    def get_current_or_default(self):
        return self.current()


class Manual:
    """A spawn that runs background work only when asked (or at once with run_now)."""

    def __init__(self, run_now=True):
        self.run_now = run_now
        self.jobs = []

    def __call__(self, fn, name):
        if self.run_now:
            fn()
        else:
            self.jobs.append(fn)

    def run(self):
        jobs, self.jobs = self.jobs, []
        for fn in jobs:
            fn()


PROFILE = {"volume": {"width": 220, "depth": 220, "height": 250}}


def _corpus(prefix):
    for path, flavour in corpus_files():
        if path.name.startswith(prefix):
            return path, flavour
    raise LookupError(f"no corpus file starts with {prefix!r}")


@pytest.fixture
def env(tmp_path):
    uploads = tmp_path / "uploads"
    data = tmp_path / "data"
    uploads.mkdir()
    data.mkdir()
    files = FakeFileManager(uploads, data)
    printer = FakePrinter(files)

    def make(profile=lambda: PROFILE, script=None, **kw):
        kw.setdefault("flavour", lambda: "marlin")
        kw.setdefault("spawn", Manual())
        # the plugin's own adapter over the fakes of OctoPrint's printer, file manager and profiles
        port = OctoPrintPort(printer, files, FakeProfiles(profile), load_script=script)
        service = RecoveryService(data / "plugin", port, **kw)
        service.start()
        return service

    class Env:
        pass

    e = Env()
    e.uploads, e.files, e.printer, e.make, e.data = uploads, files, printer, make, data / "plugin"
    return e


def _print_and_die(env, service, name="part.gcode", prefix="02", fraction=0.4, source=None):
    """Upload, start, stream to a fraction of the file, then lose the connection."""
    src, flavour = _corpus(prefix)
    target = env.uploads / name
    target.write_bytes(source if source is not None else src.read_bytes())
    p = env.printer
    p.select_file(name, False)
    p.start_print()
    service.on_event("PrintStarted", {"origin": "local", "path": name, "name": name})
    size = target.stat().st_size
    while p.reader.getFilepos() < size * fraction:
        p.reader.getNext()
    pos = p.reader.getFilepos()
    service.note_progress("local", name, pos)
    p.disconnect()
    service.on_event("Disconnected", {})
    service.on_event("PrintFailed", {"origin": "local", "path": name, "reason": "error"})
    p.connected, p.state = True, "OPERATIONAL"
    p.wire.clear()
    return target, pos, flavour


def test_nothing_to_recover(env):
    service = env.make()
    assert service.get_recovery() is None
    with pytest.raises(RecoveryRefused, match="no print to recover"):
        service.recover()
    assert service.discard() is False


def test_a_print_that_died_is_offered_with_its_state_and_prelude(env):
    service = env.make()
    target, pos, flavour = _print_and_die(env, service)
    info = service.get_recovery()
    assert info["valid"] and info["status"] == "ready" and info["error"] is None
    assert info["origin"] == "local" and info["path"] == "part.gcode" and info["pos"] == pos
    assert info["source"] == "octoprint" and 0.39 < info["progress"] < 0.42
    assert info["state"] == replay_file(target, pos, flavour).state.as_dict()
    assert info["choices"] == {"position_kept": False, "start": "position", "power_lost": False}
    assert info["prelude"][0].startswith("G92 Z") and "G28 X Y" in info["prelude"]
    assert info["start"] == info["starts"]["position"] <= pos and info["layer_z"] is not None
    assert info["line"]  # the line the print continues with
    layer = service.get_recovery(position_kept=True, start="layer")
    assert layer["start"] == layer["starts"]["layer"] < info["start"]
    assert not any(line.startswith("G28") for line in layer["prelude"])
    json.dumps(info)  # JSON-ready for the API
    with pytest.raises(RecoveryRefused) as bad:
        service.get_recovery(start="middle")
    assert bad.value.status == 400


def test_recover_sends_the_prelude_before_the_first_file_line(env):
    service = env.make()
    target, pos, _ = _print_and_die(env, service)
    env.printer.before_print_started = ["M117 go"]
    info = service.get_recovery()
    result = service.recover()
    wire = env.printer.wire
    assert [line for src, line in wire[: len(info["prelude"])]] == info["prelude"]
    assert all(src == "command" for src, _ in wire[: len(info["prelude"])])
    rest = wire[len(info["prelude"]) :]
    assert [src for src, _ in rest[:2]] == ["job", "job"] and rest[2][0] == "file"
    # OctoPrint's reader, seeked to the start offset, reads exactly the file's line there
    expected = target.read_bytes()[result["start"] :].split(b"\n", 1)[0].decode().split(";")[0].strip()
    assert rest[2][1].strip() == expected
    assert env.printer.hold == 0 and env.printer.state == "PRINTING"
    assert env.files.get_recovery_data() is None  # start_print deleted OctoPrint's
    assert service.get_recovery() is None  # and ours is consumed


def test_refusals_and_bad_parameters(env):
    service = env.make()
    _print_and_die(env, service)
    with pytest.raises(RecoveryRefused) as bad:
        service.recover(start="middle")
    assert bad.value.status == 400
    for value in ("yes", 1):  # (None: the default)
        with pytest.raises(RecoveryRefused) as bad:
            service.recover(position_kept=value)
        assert bad.value.status == 400
    for prelude in ("G28", ["G1 X1\nG28"], ["x" * 500], [1], ["G1"] * 1000):
        with pytest.raises(RecoveryRefused) as bad:
            service.recover(prelude=prelude)
        assert bad.value.status == 400
    env.printer.connected = False
    with pytest.raises(RecoveryRefused, match="not connected"):
        service.recover()
    env.printer.connected, env.printer.state = True, "PRINTING"
    with pytest.raises(RecoveryRefused, match="print is running"):
        service.recover()
    env.printer.state = "OPERATIONAL"
    assert env.printer.wire == [] and service.get_recovery()["valid"]


def test_an_edited_prelude_is_sent_as_given(env):
    service = env.make()
    _print_and_die(env, service)
    lines = service.get_recovery()["prelude"] + ["M420 S1"]
    service.recover(prelude=[" M117 edited  ", "", *lines])
    sent = [line for src, line in env.printer.wire if src == "command"]
    assert sent == ["M117 edited", *lines]


def test_a_start_that_does_not_happen_sends_nothing(env):
    service = env.make()
    _print_and_die(env, service)
    env.printer.ignore_start = True
    with pytest.raises(RecoveryRefused, match="did not start"):
        service.recover()
    assert env.printer.wire == [] and env.printer.hold == 0
    assert service.get_recovery()["valid"]  # still there to try again


def test_a_failed_prelude_cancels_before_any_file_line(env):
    service = env.make()
    _print_and_die(env, service)
    env.printer.fail_commands = True
    with pytest.raises(RecoveryRefused, match="failed"):
        service.recover()
    assert env.printer.cancelled and env.printer.hold == 0
    assert not any(src == "file" for src, _ in env.printer.wire)


def test_a_homing_before_print_started_script_is_refused(env):
    service = env.make(
        script=lambda name: "; prepare\nG28 ; home\nM117 hi" if name == "beforePrintStarted" else ""
    )
    _print_and_die(env, service)
    with pytest.raises(RecoveryRefused, match="beforePrintStarted"):
        service.recover()


def test_changed_missing_and_sd_files_cannot_be_recovered(env):
    service = env.make()
    target, pos, _ = _print_and_die(env, service)
    data = bytearray(target.read_bytes())
    data[-5] = ord("7") if data[-5] != ord("7") else ord("8")  # same size, same mtime second maybe
    target.write_bytes(bytes(data))
    info = service.get_recovery()
    assert not info["valid"] and "changed" in info["error"]
    with pytest.raises(RecoveryRefused, match="changed"):
        service.recover()
    target.unlink()
    assert "no longer exists" in service.get_recovery()["error"]
    env.files.save_recovery_data("sdcard", "part.gco", 100)
    info = service.get_recovery()
    assert info["origin"] == "sdcard" and not info["valid"] and "SD card" in info["error"]


def test_without_a_fingerprint_the_modification_time_decides(env):
    service = env.make()
    src, _ = _corpus("09")
    target = env.uploads / "old.gcode"
    target.write_bytes(src.read_bytes())
    env.files.save_recovery_data("local", "old.gcode", 5000)  # a print from before the plugin ran
    info = service.get_recovery()
    assert info["valid"] and any("fingerprint" in w for w in info["warnings"])
    env.files.clock = lambda: time.time() - 3600  # the failure was an hour ago, the file is newer
    env.files.save_recovery_data("local", "old.gcode", 5000)
    service = env.make()
    assert "modified after" in service.get_recovery()["error"]


def test_the_record_survives_restarts_and_other_files_until_discarded(env):
    service = env.make()
    _print_and_die(env, service)
    # selecting another file deletes OctoPrint's data; ours stays, also across a restart
    (env.uploads / "other.gcode").write_text("G28\n")
    env.printer.select_file("other.gcode", False)
    assert env.files.get_recovery_data() is None
    again = env.make()
    info = again.get_recovery()
    assert info["valid"] and info["path"] == "part.gcode"
    # another print starting does not end it either; its normal end does
    env.printer.start_print()
    again.on_event("PrintStarted", {"origin": "local", "path": "other.gcode"})
    assert again.get_recovery()["path"] == "part.gcode"
    again.on_event("PrintDone", {"origin": "local", "path": "other.gcode"})
    assert again.get_recovery() is None


def test_discard_forgets_ours_and_octoprints(env):
    service = env.make()
    _print_and_die(env, service)
    assert service.discard() is True
    assert env.files.get_recovery_data() is None and service.get_recovery() is None
    assert env.make().get_recovery() is None


def test_a_host_that_died_leaves_the_last_progress(env):
    service = env.make()
    src, _ = _corpus("02")
    (env.uploads / "p.gcode").write_bytes(src.read_bytes())
    env.printer.select_file("p.gcode", False)
    env.printer.start_print()
    service.on_event("PrintStarted", {"origin": "local", "path": "p.gcode"})
    service.note_progress("local", "p.gcode", 200_000)
    service.note_progress("local", "p.gcode", 200_050)  # within the interval: not written
    # the host dies: no event, no OctoPrint data; next boot
    restarted = env.make()
    info = restarted.get_recovery()
    assert info["source"] == "safepause" and info["pos"] == 200_000 and info["valid"]


def test_a_hold_that_ends_badly_points_at_the_held_line(env):
    service = env.make()
    target, pos, _ = _print_and_die(env, service)
    held = pos - 40  # where the suppressed line started
    assert service.correct_position("local", "part.gcode", held, z=42.5) is True
    assert env.files.get_recovery_data()["pos"] == held
    info = service.get_recovery()
    assert info["pos"] == held and info["source"] == "hold"
    assert info["prelude"][0] == "G92 Z42.5"  # the pause had lifted the nozzle there

    # a cancel because of a firmware error during a hold: OctoPrint records its position only after
    # the hold is released, i.e. after the correction; the correction is applied again at the event
    env.printer.state = "PRINTING"
    env.printer.reader.getNext()
    later = env.printer.reader.getFilepos()
    service.correct_position("local", "part.gcode", later - 10)
    service.on_event("PrintCancelling", {"origin": "local", "path": "part.gcode", "firmwareError": "MINTEMP"})
    env.printer.cancel_print()
    assert env.files.get_recovery_data()["pos"] == later
    service.on_event("PrintCancelled", {"origin": "local", "path": "part.gcode"})
    assert env.files.get_recovery_data()["pos"] == later - 10
    assert service.get_recovery()["pos"] == later - 10
    # a new print forgets the correction
    service.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})
    env.files.save_recovery_data("local", "part.gcode", 1234)
    service.on_event("PrintFailed", {})
    assert service.get_recovery()["pos"] == 1234


def _start(env, service, name="p.gcode", prefix="02"):
    src, _ = _corpus(prefix)
    (env.uploads / name).write_bytes(src.read_bytes())
    env.printer.select_file(name, False)
    env.printer.start_print()
    service.on_event("PrintStarted", {"origin": "local", "path": name})


@pytest.mark.parametrize("octoprint_wrote", (False, True))
def test_a_hold_survives_octoprint_stopping_or_being_killed(env, octoprint_wrote):
    """Held and lifted, then OctoPrint stops (SIGTERM: it writes no recovery data) or is killed (nothing
    runs at all): the next start offers the held line with the lifted nozzle, not the last periodic
    position, nor a later one OctoPrint recorded."""
    service = env.make()
    _start(env, service)
    service.note_progress("local", "p.gcode", 150_000)  # the periodic position, older than the hold
    held = 263_996
    service.correct_position("local", "p.gcode", held)  # the hold's position, before anything moves
    service.correct_position("local", "p.gcode", held, z=11.65)  # lifted
    if octoprint_wrote:
        env.files.save_recovery_data("local", "p.gcode", held + 120)  # read ahead of the held line
    info = env.make().get_recovery()  # the next start: no event of the old process ever came
    assert info["valid"] and info["pos"] == held and info["source"] == "hold"
    assert info["prelude"][0] == "G92 Z11.65"  # declared where the lifted nozzle is
    kept = env.make().get_recovery(position_kept=True)
    travel = next(line for line in kept["prelude"] if line.startswith("G1 Z"))
    assert float(travel.split()[1][1:]) >= 11.65  # never lowered onto a part taller than the record says


@pytest.mark.parametrize("position_kept", (False, True))
def test_a_hold_killed_with_the_filament_out_for_a_change_loads_it_before_anything_prints(env, position_kept):
    service = env.make()
    _start(env, service)
    held = 263_996
    service.correct_position("local", "p.gcode", held, z=11.65, unloaded=True)
    info = env.make().get_recovery(position_kept=position_kept)  # the next start
    assert info["valid"] and info["unloaded"] is True and info["source"] == "hold"
    warning = next(w for w in info["warnings"] if "filament change" in w)
    assert "put the new filament in" in warning and "loads 90 mm and purges 30 mm" in warning, warning
    prelude = info["prelude"]
    # hot first, then the change's load and purge where the prime happens, then the prime, then back
    heated = max(i for i, line in enumerate(prelude) if line.startswith(("M109", "M190")))
    load, purge = prelude.index("G1 E90 F360"), prelude.index("G1 E30 F180")
    back = next(i for i in range(purge, len(prelude)) if prelude[i].startswith("G1 X"))
    primed = next(i for i in range(purge + 1, len(prelude)) if prelude[i].startswith("G1 E"))
    assert heated < load < purge < primed < back, prelude
    assert prelude[load - 1] == prelude[purge - 1] == "M83"
    service = env.make()
    env.printer.state = "OPERATIONAL"  # (OctoPrint was killed: the printer stopped with it)
    env.printer.wire.clear()
    service.recover(position_kept=position_kept)
    assert [line for _, line in env.printer.wire[: len(prelude)]] == prelude
    # the new filament went in during the hold: no load
    _start(env, service)
    service.correct_position("local", "p.gcode", held, z=11.65, unloaded=False)
    info = env.make().get_recovery(position_kept=position_kept)
    assert info["unloaded"] is False and "G1 E90 F360" not in info["prelude"]
    assert not any("filament change" in w for w in info["warnings"])


def test_a_resumed_hold_no_longer_moves_the_recovery(env):
    service = env.make(live_interval=0)
    _start(env, service)
    service.correct_position("local", "p.gcode", 100_000, z=8.0)
    service.hold_released()
    service.note_progress("local", "p.gcode", 200_000)  # printing on after the resume
    info = env.make().get_recovery()
    assert info["pos"] == 200_000 and info["source"] == "safepause" and info["prelude"][0] != "G92 Z8"


def test_a_print_cancelled_on_purpose_is_not_offered(env):
    service = env.make()
    _start(env, service)
    service.correct_position("local", "p.gcode", 100_000, z=8.0)  # cancelled during a hold
    env.printer.cancel_print()
    service.on_event("PrintCancelling", {"origin": "local", "path": "p.gcode"})
    service.on_event("PrintCancelled", {"origin": "local", "path": "p.gcode"})
    service.on_event("PrintFailed", {"origin": "local", "path": "p.gcode", "reason": "cancelled"})
    assert env.files.get_recovery_data() is not None  # OctoPrint's own data is still there
    assert service.get_recovery() is None and env.make().get_recovery() is None
    # the same file printed again and dying is offered again
    env.printer.state = "OPERATIONAL"
    _print_and_die(env, service, name="p.gcode")
    assert service.get_recovery()["path"] == "p.gcode"


def test_large_files_are_analysed_in_the_background(env, monkeypatch):
    monkeypatch.setattr(recovery_index, "SYNC_SCAN_LIMIT", 10_000)
    spawn = Manual(run_now=False)
    service = env.make(spawn=spawn)
    _print_and_die(env, service)  # its index build is queued, not run
    info = service.get_recovery()
    assert info["status"] == "analysing" and "prelude" not in info
    with pytest.raises(RecoveryRefused, match="analysed"):
        service.recover()
    spawn.run()
    info = service.get_recovery()
    assert info["status"] == "ready" and info["prelude"]
    assert list((env.data / "recovery-index").glob("*.idx"))


def test_positions_and_offsets_with_a_bom_and_bytes_that_are_not_utf8(env):
    """OctoPrint counts a replaced byte as 3 but seeks in bytes: the start offset must be the byte one."""
    body = b"G28\nG90\nM83\nM104 S200\nM109 S200\nG1 Z0.2 F600\n; \xe9t\xe9 caf\xe9\n"
    body += b"".join(b"G1 X%d Y10 E0.1\n" % (10 + i) for i in range(60))
    data = codecs.BOM_UTF8 + body
    service = env.make()
    target, pos, _ = _print_and_die(env, service, name="latin.gcode", source=data, fraction=0.8)
    info = service.get_recovery()
    assert info["valid"] and info["pos"] == pos
    assert info["start"] < pos  # 3 replaced bytes counted 3 each by OctoPrint, 1 each on disk
    reader = PrintingGcodeFileInformation(str(target))
    reader.start()
    reader.seek(info["start"])
    line, _, _ = reader.getNext()
    assert line.strip() == data[info["start"] :].split(b"\n", 1)[0].decode()
    assert line.strip() == info["line"]


def test_events(env):
    events = []
    service = env.make(emit=lambda name, payload: events.append((name, payload)))
    target, pos, _ = _print_and_die(env, service)
    assert [name for name, _ in events] == ["recovery_available"]
    assert events[0][1]["path"] == "part.gcode" and events[0][1]["pos"] == pos
    service.recover(start="layer")
    assert events[-1][0] == "recovered" and events[-1][1]["start_choice"] == "layer"
    _print_and_die(env, service)
    service.discard()
    assert events[-1][0] == "recovery_discarded"


# ------------------------------------------------------------------ the controller's shadow tracker


def _replayed(path, offset, flavour, tools):
    t = StateTracker(flavour, tools=tools)
    t.feed_many(line for line, end in octoprint_lines(path) if end <= offset)
    return t


def test_shadow_start_of_a_recovered_print_comes_from_the_index(env, monkeypatch):
    service = env.make()
    target, _, flavour = _print_and_die(env, service)
    assert service.shadow_start("local", "part.gcode", flavour=flavour, tools=1) is None  # not recovered
    used = []
    real = fastscan.tracker_at
    monkeypatch.setattr(fastscan, "tracker_at", lambda *a, **kw: used.append(kw["index"]) or real(*a, **kw))
    start = service.recover(start="layer")["start"]
    service.on_event("PrintStarted", {"origin": "local", "path": "part.gcode"})  # its own start: kept

    tracker, offset = service.shadow_start("local", "part.gcode", flavour=flavour, tools=1)
    assert offset == start and tracker.state == _replayed(target, start, flavour, 1).state
    info = fastscan.index_info(used[-1], target, flavour, tools=1)
    assert info.valid and info.complete  # built when the print first ran, and read now

    # the follower counts positions as OctoPrint's reader of the recovered print does
    follower = FileFollower(str(target), tracker, start=offset)
    reader_pos = env.printer.reader.getFilepos()
    assert reader_pos > offset and follower.advance(reader_pos) == reader_pos
    assert follower.tracker.state == _replayed(target, reader_pos, flavour, 1).state
    follower.close()

    # another tool count: the index does not serve it, the state is still exact
    other, _ = service.shadow_start("local", "part.gcode", flavour=flavour, tools=2)
    assert other.state == _replayed(target, start, flavour, 2).state
    assert service.shadow_start("local", "other.gcode", flavour=flavour, tools=1) is None
    service.on_event("PrintDone", {"origin": "local", "path": "part.gcode"})
    assert service.shadow_start("local", "part.gcode", flavour=flavour, tools=1) is None


def test_no_shadow_start_for_another_print_a_changed_file_or_a_failed_start(env):
    service = env.make()
    target, _, flavour = _print_and_die(env, service)
    service.recover()
    service.on_event("PrintStarted", {"origin": "local", "path": "other.gcode"})
    assert service.shadow_start("local", "part.gcode", flavour=flavour, tools=1) is None

    _print_and_die(env, service)
    service.recover()
    target.write_bytes(target.read_bytes() + b"G1 X1\n")
    assert service.shadow_start("local", "part.gcode", flavour=flavour, tools=1) is None

    _print_and_die(env, service)
    env.printer.ignore_start = True
    with pytest.raises(RecoveryRefused):
        service.recover()
    assert service.shadow_start("local", "part.gcode", flavour=flavour, tools=1) is None


def _die_with_history(env, service, unsent=2, fraction=0.4):
    """Print file 02 to `fraction`, the last `unsent` lines read never written; the connection drops.
    Returns (the file, OctoPrint's read position, the position after the last line written)."""
    _start(env, service)
    reader, target = env.printer.reader, env.uploads / "p.gcode"
    read = []  # (line as sent, position after it)
    while reader.getFilepos() < target.stat().st_size * fraction:
        line, _, _ = reader.getNext()
        read.append((line, reader.getFilepos()))
    written = [line for line, _ in read[: len(read) - unsent]]
    written[-3:-3] = ["M105"]  # a temperature poll between file lines
    env.printer._comm = SimpleNamespace(_lastLines=deque(w.encode() for w in written[-50:]))
    env.printer.disconnect()
    service.on_event("Disconnected", {})
    service.on_event("PrintFailed", {"origin": "local", "path": "p.gcode", "reason": "error"})
    env.printer.connected, env.printer.state = True, "OPERATIONAL"
    return target, read[-1][1], read[len(read) - unsent - 1][1]


def test_the_printer_stayed_on_it_continues_after_the_last_line_it_got_at_its_exact_height(env):
    service = env.make()
    target, read_pos, delivered = _die_with_history(env, service)
    info = service.get_recovery()
    assert info["delivered"] is True and info["read_pos"] == read_pos and info["pos"] == delivered < read_pos
    assert info["start"] == delivered  # the first line never written comes next, once
    z = replay_file(target, delivered, "marlin").state.z
    assert info["prelude"][0] == f"G92 Z{z:g}"  # exactly where the last line it got left the nozzle
    assert not any("stopped between" in w for w in info["warnings"])
    # after a power loss the buffered moves may not have run: the lowest Z of the window, said so
    lost = service.get_recovery(power_lost=True)
    assert lost["choices"]["power_lost"] is True and lost["pos"] == delivered
    assert lost["prelude"][0] == f"G92 Z{lost['z_range'][0]:g}"
    # the history survives a restart with the record
    assert env.make().get_recovery()["pos"] == delivered


def test_without_the_written_history_it_says_so_and_takes_the_safe_height(env):
    service = env.make()
    _, pos, _ = _print_and_die(env, service)
    info = service.get_recovery()
    assert info["delivered"] is False and info["pos"] == info["read_pos"] == pos
    assert any("which file lines reached the printer is not known" in w for w in info["warnings"])
    assert info["prelude"][0] == f"G92 Z{info['z_range'][0]:g}"


def test_a_bed_that_cooled_far_below_the_print_is_named_before_anything_moves(env):
    service = env.make()
    _, pos, _ = _print_and_die(env, service)
    bed = service.get_recovery()["state"]["bed_temp"]
    assert bed and bed > 30
    env.printer.temperatures = {"bed": {"actual": bed - 5, "target": 0}}
    assert not any("cooled" in w for w in service.get_recovery()["warnings"])
    env.printer.temperatures = {"bed": {"actual": 24.0, "target": 0}}
    warning = next(w for w in service.get_recovery()["warnings"] if "cooled" in w)
    assert "24 °C" in warning and f"{bed:.0f} °C" in warning and "come loose" in warning


def _deposit_layers(path) -> list[float]:
    """Independently of the tracker: the Z of every layer of a file with absolute XYZ and relative E
    (file 02): the heights at which a move with X or Y extrudes; z-hop travel never extrudes. From the
    first at the lowest height: 02's intro line at Z0.28 before its first layer at Z0.2 is no layer."""
    z, layers = None, []
    for raw in path.read_text(errors="replace").splitlines():
        words = raw.split(";", 1)[0].split()
        if not words or words[0] not in ("G0", "G1"):
            continue
        params = {w[0]: float(w[1:]) for w in words[1:] if len(w) > 1 and w[0] in "XYZE"}
        z = params.get("Z", z)
        deposit = params.get("E", 0) > 0 and ("X" in params or "Y" in params) and z is not None
        if deposit and (not layers or abs(z - layers[-1]) >= 0.05):
            layers.append(z)
    return layers[layers.index(min(layers)) :]


def test_any_file_from_a_height_lists_its_layers_and_resumes_at_the_first_deposit_there(env):
    service = env.make(spawn=Manual(run_now=False))
    src, _ = _corpus("02")
    (env.uploads / "bunny.gcode").write_bytes(src.read_bytes())
    first = service.from_height("bunny.gcode")
    assert first["status"] == "analysing" and first["layers"] == []  # the index is built in the background
    service._indexes._spawn.run()
    answer = service.from_height("bunny.gcode")
    zs = [layer["z"] for layer in answer["layers"]]
    assert zs == pytest.approx(_deposit_layers(src), abs=1e-3)  # z-hop travel is no layer
    assert all(a["pos"] < b["pos"] for a, b in zip(answer["layers"], answer["layers"][1:]))

    wanted = zs[len(zs) // 2]
    at = service.from_height("bunny.gcode", z=wanted - 0.003)  # within 0.005 below: that layer
    layer = answer["layers"][len(zs) // 2]
    assert at["layer_z"] == wanted and at["pos"] == at["start"] == layer["pos"]
    assert at["prelude"] and at["prelude_error"] is None and at["choices"]["position_kept"] is True
    assert at["line"].split(";")[0].strip() == _line_from(src, layer["pos"])
    # between the first layer (Z0.2) and the intro line's height (Z0.28): the second layer, never the
    # intro line drawn before the first layer (resuming there would print the first layer again)
    low = service.from_height("bunny.gcode", z=0.25)
    assert (zs[:2], low["layer_z"], low["pos"]) == ([0.2, 0.36], 0.36, answer["layers"][1]["pos"])
    reply = service.recover(path="bunny.gcode", z=wanted - 0.003)
    assert reply["start"] == layer["pos"] and reply["prelude"] == at["prelude"]
    wire = env.printer.wire
    assert [line for source, line in wire[: len(at["prelude"])]] == at["prelude"]
    sent_file = [line for source, line in wire if source == "file"]
    assert sent_file[0] == _line_from(src, layer["pos"])  # the first deposit of that layer, first


def _line_from(path, pos: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(pos)
        return fh.readline().decode().split(";")[0].strip()


def test_from_a_height_refusals(env):
    service = env.make()
    src, _ = _corpus("02")
    (env.uploads / "bunny.gcode").write_bytes(src.read_bytes())
    top = service.from_height("bunny.gcode")["layers"][-1]["z"]
    for kwargs, status, words in (
        ({"path": "nope.gcode"}, 404, "no local file"),
        ({"path": "bunny.gcode", "z": top + 1}, 400, "no layer at or above"),
        ({"path": "bunny.gcode", "z": 2.0, "position_kept": False}, 400, "must know where its head is"),
        ({"path": "bunny.gcode", "z": "2"}, 400, "z must be a number"),
    ):
        with pytest.raises(RecoveryRefused, match=words) as refused:
            service.from_height(**kwargs)
        assert refused.value.status == status
    with pytest.raises(RecoveryRefused, match="path and z go together") as refused:
        service.recover(path="bunny.gcode")
    assert refused.value.status == 400
    with pytest.raises(RecoveryRefused, match="the layer is the start") as refused:
        service.recover(path="bunny.gcode", z=2.0, start="layer")
    assert refused.value.status == 400


def test_touch_off_after_a_power_loss_continues_with_the_next_layer(env):
    service = env.make()
    target, _, _ = _die_with_history(env, service)
    with pytest.raises(RecoveryRefused, match="no touch-off is under way"):
        service.touch_off("jog", -0.1)
    rec = service.get_recovery(power_lost=True)
    env.printer.wire.clear()
    started = service.touch_off("start")
    sent = [line for _, line in env.printer.wire]
    assert sent == started["lines"] and sent[0] == f"G92 Z{rec['z_range'][0]:g}"
    assert "G28 X Y" in sent and not any(line.startswith("G28") and "Z" in line for line in sent)
    assert sent.index("G28 X Y") < sent.index(next(line for line in sent if line.startswith("M109")))
    state = rec["state"]
    assert sent[-1].startswith(f"G1 X{state['x']:g} Y{state['y']:g}")  # above the last printed point
    assert started["z"] > rec["max_z"]  # clear of the part while X and Y home and travel
    assert service.get_recovery()["touch_off"]["z"] == started["z"]

    env.printer.wire.clear()
    steps = 0
    with pytest.raises(RecoveryRefused, match="below where the top of the print can be"):
        while True:  # the user keeps lowering; SafePause stops below where the part's top can be
            service.touch_off("jog", -0.5)
            steps += 1
    assert steps > 0 and env.printer.wire[:3] == [("command", "G91"), ("command", "G1 Z-0.5 F600"), ("command", "G90")]
    for bad in ("x", 0, 50, float("nan"), True):
        with pytest.raises(RecoveryRefused) as refused:
            service.touch_off("jog", bad)
        assert refused.value.status == 400

    env.printer.wire.clear()
    done = service.touch_off("confirm")
    layer_z = rec["layer_z"]
    assert done["prelude"][0] == f"G92 Z{layer_z:g}" and done["layer_z"] > layer_z
    wire = env.printer.wire
    assert [line for _, line in wire[: len(done["prelude"])]] == done["prelude"]
    first_file = next(line for source, line in wire if source == "file")
    assert first_file == _line_from(target, done["start"])  # the next layer's first deposit
    assert replay_file(target, done["start"], "marlin").state.z == pytest.approx(done["layer_z"])
    assert service.get_recovery() is None  # recovered


def test_touch_off_cancel_lifts_and_ends(env):
    service = env.make()
    _die_with_history(env, service)
    service.touch_off("start")
    env.printer.wire.clear()  # (the print's own lines, then the touch-off's)
    assert service.touch_off("cancel") == {"active": False}
    assert [line for _, line in env.printer.wire][1].startswith("G1 Z")
    with pytest.raises(RecoveryRefused, match="no touch-off"):
        service.touch_off("confirm")
    assert service.get_recovery()["valid"]  # still offered
