"""Fixtures for end-to-end tests against a real `octoprint serve` (scripts/sandbox.py).

`sandbox`: one server per session, started with the `octoprint` of the interpreter running the tests
(the plugin must be installed there, e.g. `pip install -e .`), the single-file test plugins of
tests/e2e/plugins/ loaded, the virtual printer connected.
Its octoprint.log, serial.log and stdout are copied to test-artifacts/e2e/ when the session ends.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import sandbox as sandbox_module  # noqa: E402

# one folder per pytest-xdist worker: each runs its own servers
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
ARTIFACTS = REPO / "test-artifacts" / ("e2e-" + _WORKER if _WORKER else "e2e")


@pytest.fixture(scope="session")
def sandbox():
    octoprint = Path(sys.executable).parent / "octoprint"  # same venv as the tests, not resolved
    if not octoprint.exists():
        pytest.fail(f"{octoprint} not found: run the e2e tests with the interpreter of OctoPrint's venv")
    helpers = sorted((Path(__file__).parent / "plugins").glob("*.py"))  # test-only plugins, if any
    sb = sandbox_module.Sandbox(octoprint=str(octoprint), plugins=helpers)
    try:
        sb.start()
        sb.connect(profile="corpus_210x210x205")
        yield sb
    finally:
        sb.stop()
        _save_artifacts(sb)
        sb.cleanup()


def _save_artifacts(sb):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in (sb.octoprint_log, sb.serial_log, sb.stdout_log):
        if log.exists():
            shutil.copyfile(log, ARTIFACTS / log.name)


# ---------------------------------------------------------------------------------------------------------
# `sp_server`: a second server, tuned for deterministic pause tests (test_rest_api.py, test_helper_plugin.py)

# The virtual printer's heaters start at their ambient temperature: at 210 °C the slice's M190 S60 and
# M109 S210 return at once (targets at or below it) instead of heating for 20 s per print.
SP_CONFIG = {"plugins": {"virtual_printer": {"ambientTemperature": 210.0, "simulated_errors": []}}}
SP_PROFILE = "corpus_210x210x205"
SP_SOURCE = "09_marlin_absE_0.10mm_comments_M3screw.gcode"  # real PrusaSlicer output, absolute E
SP_SLICE_LINES = 1500  # start G-code, intro line, first layers (~55 kB): ~4 s of moves at real speed
SP_ARTIFACTS = REPO / "test-artifacts" / ("e2e-safepause-" + _WORKER if _WORKER else "e2e-safepause")
_SEND = re.compile(r"^(\S+ \S+) - Send: (?:N(\d+) (.*)\*\d+|(.*))$")


def make_slice(target: Path) -> Path:
    """The corpus file's first SP_SLICE_LINES lines plus its end G-code, as a new file."""
    source = sandbox_module.corpus.gcode_dir() / SP_SOURCE
    lines = source.read_text().splitlines(keepends=True)
    end = next(i for i in range(len(lines) - 1, 0, -1) if lines[i].startswith(";TYPE:Custom"))
    stop = next(i for i in range(end, len(lines)) if lines[i].startswith("M117 Finished"))
    target.write_text("".join(lines[:SP_SLICE_LINES] + lines[end : stop + 1]))
    return target


def file_lines(path: Path) -> list:
    """[(line as OctoPrint sends it, byte offset after it)], read with OctoPrint's own reader."""
    from octoprint.util.comm import PrintingGcodeFileInformation

    info = PrintingGcodeFileInformation(str(path))
    info.start()
    result = []
    try:
        while True:
            line, pos, _ = info.getNext()
            if line is None:
                return result
            result.append((line, pos))
    finally:
        info.close()



def wait_for(predicate, timeout=20.0, what="condition", interval=0.05):
    """The predicate's first truthy value; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout} s")
        time.sleep(interval)


class SafePauseServer:
    """A started Sandbox plus the few things every pause test needs: the uploaded slice and its lines,
    state polling, and serial.log reading by byte offset."""

    def __init__(self, sb, gcode: Path):
        self.sb = sb
        self.gcode = gcode
        self.name = gcode.name
        self.size = gcode.stat().st_size
        self.lines = file_lines(gcode)

    # ----- REST shortcuts

    def api(self, *args, **kwargs):
        return self.sb.api(*args, **kwargs)

    def sp_state(self, user="admin") -> dict:
        status, body = self.sb.api("GET", "/api/plugin/safepause", user=user)
        assert status == 200, (status, body)
        return body

    def job(self) -> dict:
        status, body = self.sb.api("GET", "/api/job")
        assert status == 200, (status, body)
        return body

    def command(self, command, user="admin", **params):
        return self.sb.api("POST", "/api/plugin/safepause", dict(params, command=command), user=user)

    def detector(self, command=None, **params):
        if command is None:
            return self.sb.api("GET", "/api/plugin/safepause_detector")[1]
        return self.sb.api("POST", "/api/plugin/safepause_detector", dict(params, command=command))

    # ----- waiting

    wait_for = staticmethod(wait_for)

    def wait_sp(self, *states, timeout=10.0) -> dict:
        def check():
            state = self.sp_state()
            return state if state["state"] in states else None

        return self.wait_for(check, timeout, what=f"safepause state in {states}")

    def ensure_ready(self):
        """Connected, Operational, SafePause idle: whatever an earlier (maybe failed) test left behind."""
        state = self.sb.state()
        if state.startswith(("Offline", "Error", "Closed")):
            self.sb.connect(profile=SP_PROFILE)
        if self.sp_state()["state"] in ("pausing", "paused"):
            self.command("cancel")
        if not self.sb.state().startswith("Operational"):
            self.sb.api("POST", "/api/job", {"command": "cancel"})
        self.sb.wait_state("Operational", timeout=30)
        self.wait_sp("idle")

    def start_print(self, min_filepos=None) -> int:
        """Starts the slice; returns the serial.log offset from before the start. Waits until OctoPrint
        has read `min_filepos` bytes (a fraction of the file when below 1)."""
        mark = self.serial_mark()
        status, body = self.sb.api(
            "POST", f"/api/files/local/{self.name}", {"command": "select", "print": True}
        )
        assert status == 204, (status, body)
        self.sb.wait_state("Printing", timeout=20)
        if min_filepos is not None:
            self.wait_filepos(min_filepos)
        return mark

    def wait_filepos(self, filepos, timeout=20.0) -> dict:
        target = filepos * self.size if filepos < 1 else filepos

        def check():
            job = self.job()
            assert job["state"] == "Printing", f"the print ended before {target} bytes were read: {job}"
            return job if (job["progress"]["filepos"] or 0) >= target else None

        return self.wait_for(check, timeout, interval=0.02, what=f"filepos {target}")

    # ----- serial.log

    def serial_mark(self) -> int:
        return self.sb.serial_log.stat().st_size if self.sb.serial_log.exists() else 0

    def sends(self, start: int, end: int | None = None, unnumbered: bool = False) -> list:
        """[(timestamp, cmd)] of the numbered lines written to the printer between two serial.log
        offsets, in order; a resent line number (no M110 reset in between) is counted once. With
        `unnumbered`, also the lines sent without a line number (outside prints, out-of-band M108)."""
        with open(self.sb.serial_log, "rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(end - start)
        result, last = [], None
        for raw in data.decode(errors="replace").splitlines():
            match = _SEND.match(raw)
            if not match:
                continue  # Recv:, state changes
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if match.group(2) is None:
                if unnumbered:
                    result.append((stamp, match.group(4).strip()))
                continue
            n, cmd = int(match.group(2)), match.group(3).strip()
            if cmd.startswith("M110"):
                last = None
            elif last is not None and n <= last:
                continue
            else:
                last = n
            result.append((stamp, cmd))
        return result

    def wait_serial_quiet(self, start: int, quiet=0.5, timeout=10.0) -> list:
        """Waits until no line has been sent for `quiet` seconds; returns the sends since `start`."""
        previous, since = None, time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            sends = self.sends(start)
            if sends != previous:
                previous, since = sends, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return sends
            time.sleep(0.1)
        raise TimeoutError(f"serial.log did not stop growing within {timeout} s")

    def held_line_index(self, filepos: int) -> int:
        """Index in self.lines of the first line not sent before the hold (the saved one): the lines
        that end at or before SafePause's `filepos` went out."""
        return sum(1 for _, end in self.lines if end <= filepos)

    def exactly_once(self, held: list, resumed: list, k: int) -> list:
        """Problems with the file lines in serial.log for a print held after its first `k` lines.

        `held`: the commands sent from the print's start until the resume request (the file's first k
        lines, then SafePause's pause lines); `resumed`: from the resume request on (SafePause's
        restore lines, the saved line re-sent, the rest of the file, OctoPrint's closing M400). Every
        file line must be there exactly once, in order: the re-sent saved line counts once.
        """
        expected = [line for line, _ in self.lines]
        problems = []
        sent = list(held)
        while sent and sent[0].startswith("M110"):
            sent.pop(0)  # OctoPrint's line number reset at the start of a print
        if sent[:k] != expected[:k]:
            first = next(i for i, (a, b) in enumerate(zip(sent, expected[:k])) if a != b) if sent else 0
            problems.append(
                f"before the hold, line {first + 1}: sent {sent[first : first + 3]}, "
                f"file has {expected[first : first + 3]}"
            )
        pause_lines = sent[k:]
        if not pause_lines:
            problems.append("no pause lines were sent after the last file line")
        # pause lines may read like file lines ("G90"): only lines found once in the whole file tell
        unique = {line for line in expected[max(0, k - 30) : k + 30] if expected.count(line) == 1}
        leaked = [line for line in pause_lines if line in unique]
        if leaked:
            problems.append(f"file lines sent during the hold: {leaked}")
        rest = expected[k:]
        after = list(resumed)
        start = next((i for i in range(len(after) - len(rest) + 1) if after[i : i + len(rest)] == rest), None)
        if start is None:
            matcher = difflib.SequenceMatcher(None, after, rest, autojunk=False)
            diff = [op for op in matcher.get_opcodes() if op[0] != "equal"][:5]
            problems.append(f"the rest of the file was not sent as a whole after the resume: {diff}")
            return problems
        restore = after[:start]
        if restore and restore[-1] == rest[0]:
            problems.append(f"the saved line {rest[0]!r} was sent twice")
        if rest[0] in pause_lines and rest[0] in unique:
            problems.append(f"the saved line {rest[0]!r} went out during the hold")
        tail = after[start + len(rest) :]
        if set(tail) & set(expected[-30:]):
            problems.append(f"file lines sent again after the end of the file: {tail}")
        return problems

    def log_records(self):
        return log_records(self.sb.log_text())

    def plugin_log_problems(self, since: int = 0):
        """The records from `since` on that show SafePause (or the test detector) failing."""
        return plugin_log_problems(self.log_records()[since:])


# A record of octoprint.log: "<date> <time>,<ms> - <logger> - <LEVEL> - <message>" and its traceback.
_RECORD = re.compile(r"^\S+ \S+ - (?P<logger>\S+) - (?P<level>[A-Z]+) - (?P<message>.*)", re.DOTALL)
_PLUGIN_LOGGERS = ("octoprint.plugins.safepause",)  # safepause_detector shares the prefix
_PLUGIN_FRAME = re.compile(r'^\s*File "[^"]*(?:/octoprint_safepause/|/safepause_detector\.py)', re.MULTILINE)
_PLUGIN_5XX = re.compile(r"^5\d\d \S+ /(?:api/)?plugin/safepause\b")
_PLUGIN_API_ERROR = "Error while executing SimpleApiPlugin safepause"  # OctoPrint's own record of a 500


def log_records(text: str):
    """octoprint.log as records: a line with a timestamp and the traceback lines under it."""
    records = []
    for line in text.splitlines():
        if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - ", line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return ["\n".join(record) for record in records]


def plugin_log_problems(records):
    """What the plugin itself logged as failing: an ERROR/CRITICAL of its own loggers, a traceback
    through its code, a 5xx answer on its routes. Judged by logger and frames, never by a substring
    of the whole record: OctoPrint's own errors name paths that may contain the clone's folder."""
    problems = []
    for record in records:
        match = _RECORD.match(record)
        if not match:
            continue
        own = match["logger"].startswith(_PLUGIN_LOGGERS)
        failing = match["level"] in ("ERROR", "CRITICAL")
        message = match["message"]
        if (
            (own and failing)
            or _PLUGIN_FRAME.search(record)
            or _PLUGIN_5XX.match(message)
            or _PLUGIN_API_ERROR in message
        ):
            problems.append(record)
    return problems


@pytest.fixture(scope="session")
def sp_server(tmp_path_factory):
    octoprint = Path(sys.executable).parent / "octoprint"
    if not octoprint.exists():
        pytest.fail(f"{octoprint} not found: run the e2e tests with the interpreter of OctoPrint's venv")
    gcode = make_slice(tmp_path_factory.mktemp("safepause") / "sp_slice.gcode")
    helpers = sorted((Path(__file__).parent / "plugins").glob("*.py"))
    sb = sandbox_module.Sandbox(octoprint=str(octoprint), plugins=helpers, extra_config=SP_CONFIG)
    try:
        sb.start()
        sb.connect(profile=SP_PROFILE)
        status, reply = sb.upload(gcode)
        assert status == 201, reply
        yield SafePauseServer(sb, gcode)
    finally:
        sb.stop()
        shutil.rmtree(SP_ARTIFACTS, ignore_errors=True)
        SP_ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for log in (sb.octoprint_log, sb.serial_log, sb.stdout_log):
            if log.exists():
                shutil.copyfile(log, SP_ARTIFACTS / log.name)
        sb.cleanup()


# ---------------------------------------------------------------------------------------------------------
# recovery tests (test_recovery.py, test_recovery_browser.py)

