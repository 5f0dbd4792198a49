"""A real PauseController on the rig: the edges of the issue's proof (part 3).

The fallback hold during a long M109 and a G4 dwell; refusals (not printing, OctoPrint's own pause, SD
print, double pause, resume when not paused); OctoPrint pausing natively during our hold; a pause
requested right as the file's last line goes out; a cancel while still pausing and one between the
hold and the pause lines; the printer disconnecting while pausing, paused, while the pause lines go out
and while resuming; controller.stop() (OctoPrint shutdown) during a hold; another plugin holding the
job at the same time; the long-hold heater policy.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    check_pause_placement,
    file_lines,
    flavour_for_gcode,
    head_and_tail,
    unwire_controller,
    wire_controller,
    wire_kind,
)

from octoprint_safepause.adapter.octoprint_port import OctoPrintPort
from octoprint_safepause.core.controller import IDLE, PAUSED, PAUSING, RESUMING, TAG_RESEND, Refused
from tests.wire_checks import (
    LineLedger,
    assert_reheated_before_extruding,
    last_s_value,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SMALL = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"  # 7605 file lines, M190 + M109
DWELL = CORPUS_GCODE / "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"  # G4 S10 in its start G-code
KLIPPER = CORPUS_GCODE / "03_klipper_voron_fwretract_G10G11_sphere_0.25mm.gcode"


@pytest.fixture
def wired(rig):
    made = []

    def make(**kwargs):
        made.append(wire_controller(rig, **kwargs))
        return made[-1]

    yield make
    for w in made:
        unwire_controller(rig, w)


def wait_until(predicate, timeout=10.0, what="condition", rig=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what} not reached after {timeout}s" + (f"; {rig.diagnose()}" if rig else "")
            )
        time.sleep(0.002)


def wait_stuck_in(rig, command, quiet=0.15, timeout=10.0):
    """Wait until `command` (a file line) went out and then no file line for `quiet` s: the printer sits in
    it. (The line after it may be in flight too: the virtual printer answers some lines, e.g. Klipper
    macros it does not know, with an extra "ok", which lets OctoPrint send one line ahead.)"""
    wait_until(lambda: any(r.cmd.startswith(command) for r in file_records(rig)), timeout, command, rig)
    count, since = len(file_records(rig)), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.01)
        if len(file_records(rig)) != count:
            count, since = len(file_records(rig)), time.monotonic()
    return [r for r in file_records(rig) if r.cmd.startswith(command)][-1]


def file_records(rig):
    return [r for r in rig.records() if r.fileline is not None]


def filepos(rig) -> int:
    comm = rig.comm
    return ((comm.getFilePosition() if comm else None) or {}).get("pos", 0)


def print_ended(rig) -> bool:
    """The current print's terminal event fired (print_file() forgets the previous print's events)."""
    return any(e[0] in ("PrintDone", "PrintCancelled", "PrintFailed") for e in rig.fired())


def assert_clean_end(rig, controller, path, saved_lines, trap, result="PrintDone", complete=True):
    assert rig.wait_done(30) == result
    wait_until(lambda: controller.state == IDLE, 5, "controller idle")
    assert rig.hold_count() == 0 and not controller.holding  # the print ended, the connection did not
    records = rig.records()
    report = check_file_lines(records, path, complete=complete)
    assert report.ok, report
    if saved_lines is not None:
        problems = check_pause_placement(records, saved_lines)
        assert not problems, problems
    assert not trap.ours(), "\n".join(trap.ours())


# ---------------------------------------------------------------------------------------------------------
# the fallback: no file line comes


@pytest.mark.parametrize(
    "path,command",
    [(SMALL, "M109"), (DWELL, "G4")],
    ids=["long M109", "G4 dwell"],
)
def test_pause_while_the_printer_is_busy_takes_the_hold_after_hold_timeout(
    rig, wired, tmp_path, path, command
):
    """The printer sits in a long M109 / G4 (3 s before its "ok"): no file line is queued, so the
    controller takes the hold itself after hold_timeout; nothing is suppressed, the pause lines follow
    the busy command, nothing is lost."""
    printed = head_and_tail(path, tmp_path, head_layers=2)
    w = wired(hold_timeout=0.5, flavour=flavour_for_gcode(path.name))
    controller = w.controller
    with LogTrap() as trap:
        rig.debug(f"sleep_after_next {command} 3")
        rig.print_file(printed)
        busy = wait_stuck_in(rig, command)
        assert file_records(rig)[-1].fileline == busy.fileline
        started = time.monotonic()
        controller.pause(reason="busy", source="test")
        wait_until(lambda: rig.hold_count() == 1, 5, "the hold", rig)
        took = time.monotonic() - started
        assert 0.45 <= took < 2.0, f"fallback hold after {took:.2f}s with hold_timeout 0.5"
        # still inside the busy command: no file line since, and no line saved; the park waits behind
        # the busy command, so SafePause is still pausing and OctoPrint still printing
        assert file_records(rig)[-1].fileline == busy.fileline
        state = controller.get_state()
        assert state["saved_line"] is None and state["holding"] and state["state"] == "pausing"
        assert rig.state_id() == "PRINTING"
        # the pause lines go out right after the busy command's "ok", before any file line; then paused
        wait_until(lambda: controller.state == PAUSED, 8, "paused", rig)
        assert rig.state_id() == "PAUSED"
        assert any(wire_kind(r) == "P" for r in rig.records())
        assert file_records(rig)[-1].fileline == busy.fileline
        controller.resume()
        assert_clean_end(rig, controller, printed, [None], trap)
    kinds = [wire_kind(r) for r in rig.records()]
    first_pause = kinds.index("P")
    assert rig.records()[max(i for i in range(first_pause) if kinds[i] == "F")].fileline == busy.fileline
    assert [e[0] for e in w.events] == ["paused", "resumed"]


# ---------------------------------------------------------------------------------------------------------
# refusals


def test_refused_when_not_printing(rig, wired):
    controller = wired().controller
    with pytest.raises(Refused, match="not printing"):
        controller.pause()
    with pytest.raises(Refused, match="not paused"):
        controller.resume()
    with pytest.raises(Refused, match="nothing to cancel"):
        controller.cancel()
    assert controller.try_(controller.pause) is False
    assert controller.state == IDLE and rig.hold_count() == 0


def test_refused_while_octoprint_pauses_natively_with_take_over_off(rig, wired):
    w = wired(hold_timeout=0.5, take_over_pause=False)
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        rig.comm.setPause(True, tags={"source:api", "api:job"})
        # pausing (M400 + M114 on their way) and paused: both refused. Which of the two this first
        # request meets depends on how fast the virtual printer answers the M400; either way it is refused
        # for OctoPrint's own pause and nothing is held.
        with pytest.raises(Refused, match=r"the printer is (pausing, not printing|paused by OctoPrint)"):
            controller.pause()
        assert controller.state == IDLE and rig.hold_count() == 0
        rig.wait_state("PAUSED", timeout=10)
        with pytest.raises(Refused, match="paused by OctoPrint, not by SafePause"):
            controller.pause()
        assert controller.state == IDLE and rig.hold_count() == 0
        rig.comm.setPause(False, tags={"source:api", "api:job"})
        rig.wait_state("PRINTING", timeout=10)
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        saved = controller.get_state()["saved_line"]
        controller.resume()
        assert_clean_end(rig, controller, SMALL, [saved], trap)


def test_octoprints_own_pause_and_resume_during_our_pause_are_ours(rig, wired):
    """OctoPrint says Paused during our pause: its own Pause changes nothing, its Resume is our resume
    (the saved line once, then the file), and no second pause follows."""
    w = wired(hold_timeout=0.5)
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        saved = controller.get_state()["saved_line"]
        assert rig.state_id() == "PAUSED" and rig.hold_count() == 1
        rig.comm.setPause(True, tags={"source:api", "api:job"})
        assert rig.state_id() == "PAUSED" and controller.state == PAUSED
        rig.comm.setPause(False, tags={"source:api", "api:job"})
        wait_until(lambda: controller.state == IDLE, 5, "resumed", rig)
        rig.wait_state("PRINTING", timeout=10)
        resent = [r for r in rig.records() if TAG_RESEND in (r.tags or ())]
        assert [r.cmd for r in resent] == [saved]
        assert_clean_end(rig, controller, SMALL, [saved], trap)
    assert [e[0] for e in rig.fired() if e[0] in ("PrintPaused", "PrintResumed")] == ["PrintPaused", "PrintResumed"]


def test_refused_on_an_sd_print(rig, wired, tmp_path):
    controller = wired().controller
    short = head_and_tail(SMALL, tmp_path, head_layers=30)
    rig.print_sd(short)
    rig.wait_state("PRINTING", timeout=10)  # the virtual printer streams SD prints too
    assert controller.try_(controller.pause) is False
    with pytest.raises(Refused, match="SD card"):
        controller.pause()
    assert controller.state == IDLE and rig.hold_count() == 0
    rig.cancel()
    rig.wait_state("OPERATIONAL", timeout=15)


def test_double_pause_resume_and_cancel_in_the_wrong_state_are_refused(rig, wired):
    """Each request meets a state held still by the test (StallingPort stops the controller thread inside
    the pause, after the hold, and inside the resume, before its lines), so each refusal is the one that
    state determines."""
    port = StallingPort(rig)
    w = wired(port=port, hold_timeout=0.5)
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        port.arm()
        controller.pause(reason="first")
        port.wait_entered("pausing")
        assert controller.state == PAUSING
        with pytest.raises(Refused, match=r"^already pausing$"):
            controller.pause(reason="second")
        with pytest.raises(Refused, match=r"^not paused \(state: pausing\)$"):
            controller.resume()
        port.go_on.set()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        with pytest.raises(Refused, match=r"^already paused$"):
            controller.pause(reason="third")
        assert controller.get_state()["reason"] == "first" and rig.hold_count() == 1
        saved = controller.get_state()["saved_line"]
        port.arm()
        controller.resume()
        port.wait_entered("resuming")
        assert controller.state == RESUMING
        with pytest.raises(Refused, match=r"^not paused \(state: resuming\)$"):
            controller.resume()
        with pytest.raises(Refused, match=r"^nothing to cancel \(state: resuming\)$"):
            controller.cancel()
        port.go_on.set()
        wait_until(lambda: controller.state == IDLE, 5, "resumed", rig)
        with pytest.raises(Refused, match=r"^not paused \(state: idle\)$"):
            controller.resume()
        with pytest.raises(Refused, match=r"^nothing to cancel \(state: idle\)$"):
            controller.cancel()
        assert_clean_end(rig, controller, SMALL, [saved], trap)
    assert [e[0] for e in w.events] == ["paused", "resumed"]


# ---------------------------------------------------------------------------------------------------------
# the last line of the file


class LastLineTrigger:
    """Requests one pause at a chosen moment around the file's last line(s): from the queuing hook (on
    OctoPrint's comm thread, with its locks held) before or after the controller's own hook sees the
    line, from the sent hook (sending thread), or from the test thread."""

    def __init__(self, controller, when, total, attempt):
        self.controller, self.when, self.attempt = controller, when, attempt
        self.target = total - 1 if "second-to-last" in when else total
        self.requested = threading.Event()
        self.answered = threading.Event()  # set once the request returned (the answer is in `answers`)
        self.answers = []

    def request(self):
        if not self.requested.is_set():
            self.requested.set()
            reason = f"last-{self.attempt}"
            self.answers.append(self.controller.try_(self.controller.pause, reason=reason, source="test"))
            self.answered.set()

    def queuing(self, comm, phase, cmd, cmd_type, gcode, subcode=None, tags=None, *args, **kwargs):
        line = int(next((t[9:] for t in tags or () if t.startswith("fileline:")), 0))
        if self.when.startswith("queuing-hook, before") and line == self.target:
            self.request()
        result = self.controller.on_queuing(comm, phase, cmd, cmd_type, gcode, subcode=subcode, tags=tags)
        if self.when.startswith("queuing-hook, after") and line == self.target:
            self.request()
        return result

    def sent(self, comm, phase, cmd, cmd_type, gcode, subcode=None, tags=None, *args, **kwargs):
        if tags and "source:file" in tags and f"fileline:{self.target}" in tags:
            self.request()


# What each moment allows. "saved": paused on a saved line, re-sent on resume. "held without a line":
# the fallback took the hold while OctoPrint was still printing, nothing was saved (only when the last
# line's "ok" and OctoPrint's end of the print take longer than hold_timeout: a loaded machine).
# "aborted": accepted, then ended without a hold because the print had ended. "refused": OctoPrint had
# already left "printing" when the request came.
LAST_LINE_OUTCOMES = {
    # the controller's hook sees the target line armed: it must save exactly that line
    "queuing-hook, before the last line": {"saved"},
    "queuing-hook, before the second-to-last line": {"saved"},
    # the last line passed the hook unarmed: no line is left to save; OctoPrint is still printing then
    "queuing-hook, after the last line": {"aborted", "held without a line"},
    "sent-hook, last line written": {"refused", "aborted", "held without a line"},
    "test thread, last line read": {"refused", "aborted", "held without a line"},
    # a few lines may be left when the request comes, or none
    "test thread, last 200 bytes read": {"saved", "refused", "aborted", "held without a line"},
}
FINISHED_BEFORE = "the print finished before the pause took effect"
NO_LONGER_RUNNING = re.compile(r"the print is no longer running \((operational|finishing)\): nothing to pause")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", list(LAST_LINE_OUTCOMES))
def test_pause_requested_as_the_last_line_goes_out(rig, wired, tmp_path, when):
    """A pause requested right around the end of the file ends in one of the outcomes the moment allows
    (LAST_LINE_OUTCOMES), each with what must hold in it: a pause on the very line the armed hook saw,
    re-sent on resume; a hold without a saved line, nothing re-sent; an aborted pause that says why and
    announces nothing; a refusal. Never a lost line, never a leaked hold."""
    printed = head_and_tail(SMALL, tmp_path, head_layers=1)
    lines = file_lines(printed)
    total = len(lines)
    size = printed.stat().st_size
    w = wired(hold_timeout=0.3)
    controller = w.controller
    outcomes = []
    for attempt in range(3):
        trigger = LastLineTrigger(controller, when, total, attempt)
        rig.hooks["queuing"] = trigger.queuing
        if when.startswith("sent-hook"):
            rig.hooks["sent"] = trigger.sent
        with LogTrap() as trap:
            rig.print_file(printed)
            if when.startswith("test thread"):
                at = size if "last line" in when else size - 200
                # not "state != PRINTING": right after print_file() the state is still OPERATIONAL or
                # STARTING, and the request then landed at the file's first lines (seen under load)
                wait_until(lambda a=at: filepos(rig) >= a or print_ended(rig), 10, "end", rig)
                trigger.request()
            wait_until(lambda t=trigger: t.answered.is_set(), 10, "the pause request", rig)
            wait_until(lambda: controller.state in (PAUSED, IDLE), 5, "settled", rig)
            state = controller.get_state()
            if controller.state == PAUSED:
                outcome = "saved" if state["saved_line"] is not None else "held without a line"
            else:
                outcome = "aborted" if trigger.answers == [True] else "refused"
            where = f"{when}, attempt {attempt}: {outcome} {trigger.answers} {state['error']!r} {w.events}"
            assert outcome in LAST_LINE_OUTCOMES[when], where
            saved = []
            if controller.state == PAUSED:
                assert rig.hold_count() == 1, where
                saved = [state["saved_line"]]
                if when.startswith("queuing-hook, before"):
                    assert state["saved_line"] == lines[trigger.target - 1], where
                controller.resume()
            elif outcome == "aborted":
                # which of the two errors depends on whether OctoPrint's PrintDone reaches the controller
                # before its wait for a file line (hold_timeout) ends: both mean the print ended unheld
                if state["error"] == FINISHED_BEFORE:
                    assert rig.fired("PrintDone"), where  # it acted on OctoPrint's PrintDone
                    outcome += " (PrintDone first)"
                else:
                    assert NO_LONGER_RUNNING.fullmatch(state["error"] or ""), where
                assert w.events == [], where  # an aborted pause announces nothing
            else:
                assert w.events == [], where
            assert_clean_end(rig, controller, printed, saved, trap)
            if saved:
                assert [e[0] for e in w.events] == ["paused", "resumed"], where
            outcomes.append(outcome if not saved or saved == [None] else f"saved {saved[0]!r}")
            w.events.clear()
        rig.hooks.pop("sent", None)
    print(when, outcomes)


# ---------------------------------------------------------------------------------------------------------
# cancel while still pausing


def cancel_while_pausing(rig, wired, tmp_path, path, how="safepause"):
    """Pause while the printer sits in a long M109 (the fallback wait), cancel 0.2 s later."""
    printed = head_and_tail(path, tmp_path, head_layers=2)
    w = wired(hold_timeout=1.0, flavour=flavour_for_gcode(path.name))
    controller = w.controller
    with LogTrap() as trap:
        rig.debug("sleep_after_next M109 3")
        rig.print_file(printed)
        wait_stuck_in(rig, "M109")
        controller.pause(reason="cancel-while-pausing")
        time.sleep(0.2)  # inside the hold_timeout wait on purpose
        assert controller.state == PAUSING
        if how == "safepause":
            controller.cancel()
        else:
            rig.comm.cancelPrint(tags={"source:api", "api:job", "trigger:test"})
        assert_clean_end(rig, controller, printed, None, trap, result="PrintCancelled", complete=False)
    return w, rig.records()


@pytest.mark.parametrize(
    "path,how",
    [(SMALL, "safepause"), (KLIPPER, "safepause"), (SMALL, "comm.cancelPrint")],
    ids=["marlin", "klipper", "octoprint-cancel"],
)
def test_cancel_while_still_pausing(rig, wired, tmp_path, path, how):
    """Cancel during the fallback wait: no pause lines go out, the print ends PrintCancelled, every line
    up to the cancel once, OctoPrint's cancel script runs, no hold left; a SafePause cancel announces
    the end of the pause it accepted, whoever cancelled."""
    w, records = cancel_while_pausing(rig, wired, tmp_path, path, how)
    pause_lines = [r.cmd for r in records if wire_kind(r) == "P"]
    assert not pause_lines, f"pause lines after a cancel while pausing: {pause_lines}"
    assert any(r.tags and "script:afterPrintCancelled" in r.tags for r in records)
    assert [e[0] for e in w.events] == ["cancelled"]  # the accepted pause is announced to have ended


@pytest.mark.parametrize("path", [SMALL, KLIPPER], ids=["marlin", "klipper"])
def test_cancel_while_still_pausing_restores_nothing_that_was_not_saved(rig, wired, tmp_path, path):
    """The fallback wait ends at the cancel: no plan, so no "restore" of a SAVE_GCODE_STATE or a raised
    idle timeout that never went out."""
    _w, records = cancel_while_pausing(rig, wired, tmp_path, path)
    sent = [r.cmd for r in records if wire_kind(r) in "PC"]
    undo = [c for c in sent if c.startswith(("RESTORE_GCODE_STATE", "SET_IDLE_TIMEOUT", "M84 S", "M86 S"))]
    assert not undo, f"restored without a pause: {sent}"


class LineAtCancelPort(OctoPrintPort):
    """OctoPrint reads the next file line while SafePause's cancel goes in: cancel() waits until the
    controller's hook has saved a line (the printer's M109, stuck for 3 s, ends meanwhile and OctoPrint
    reads on), then asks OctoPrint to cancel."""

    def __init__(self, rig, ledger):
        super().__init__(*rig.port_args)
        self._rig = rig
        self.ledger = ledger

    def cancel(self, tags):
        wait_until(lambda: self.ledger.saved, 10, "a file line saved during the cancel", self._rig)
        super().cancel(tags)


def test_a_line_read_while_a_cancel_during_pausing_goes_in_is_reported(rig, wired, tmp_path):
    """A SafePause cancel while the pause waits for its hold (the printer in a long M109); OctoPrint reads
    the next file line before its cancel takes effect: the armed hook saves it. Then it must either go out
    or be reported dropped by the cancel (tests/wire_checks.LineLedger), never vanish."""
    printed = head_and_tail(SMALL, tmp_path, head_layers=2)
    ledger = LineLedger()
    port = LineAtCancelPort(rig, ledger)
    w = wired(port=port, hold_timeout=10.0)
    controller = w.controller
    rig.hooks["queuing"] = ledger.hook(controller.on_queuing)
    with LogTrap() as trap, ledger.listening(controller._log):
        rig.debug("sleep_after_next M109 3")
        rig.print_file(printed)
        busy = wait_stuck_in(rig, "M109")
        controller.pause(reason="cancel-as-a-line-comes")
        controller.cancel()  # the wait for the hold (10 s) ends at once
        assert_clean_end(rig, controller, printed, None, trap, result="PrintCancelled", complete=False)
    assert ledger.saved == [busy.fileline + 1], f"test seam moved: {ledger.summary()}"
    assert [e[0] for e in w.events] == ["cancelled"]
    delivered = [r.fileline for r in rig.records() if r.fileline is not None]
    problems = ledger.problems(delivered)
    assert not problems, f"{problems} ({ledger.summary()})"


class StallingPort(OctoPrintPort):
    """Stalls the controller thread once inside _do_pause, after the hold is taken and before the pause
    lines are sent (it reads the temperatures for the pause plan there), until the test releases it.
    Armed again (`arm()`), it stalls the next reading: inside _do_resume, before the restore lines."""

    def __init__(self, rig):
        super().__init__(*rig.port_args)
        self.stall = False
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def arm(self):
        self.entered.clear()
        self.go_on.clear()
        self.stall = True

    def wait_entered(self, what):
        if not self.entered.wait(5):
            raise TimeoutError(f"the controller did not read the temperatures while {what} (test seam moved)")

    def temperatures(self):
        if self.stall:
            self.stall = False
            self.entered.set()
            self.go_on.wait(10)
        return super().temperatures()


@pytest.mark.parametrize("path", [SMALL, KLIPPER], ids=["marlin", "klipper"])
def test_cancel_between_hold_and_pause_lines_restores_nothing_that_was_not_saved(rig, wired, tmp_path, path):
    """A cancel that arrives after the hold is taken but before the pause lines go out (the controller
    is stalled right there): no pause lines, and no "restore" of a SAVE_GCODE_STATE or a raised idle
    timeout that never went out (found here: _cancel_held used to key on token.plan; now pause_sent)."""
    printed = head_and_tail(path, tmp_path, head_layers=6)
    port = StallingPort(rig)
    w = wired(port=port, hold_timeout=1.0, flavour=flavour_for_gcode(path.name))
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(printed)
        wait_until(lambda: len(file_records(rig)) > 300, 10, "300 lines", rig)
        port.stall = True
        controller.pause(reason="cancel-before-pause-lines")
        if not port.entered.wait(5):
            raise TimeoutError("the controller did not read the temperatures while pausing (test seam moved)")
        assert controller.holding and controller.state == PAUSING
        controller.cancel()
        port.go_on.set()
        assert_clean_end(rig, controller, printed, None, trap, result="PrintCancelled", complete=False)
    records = rig.records()
    assert not [r.cmd for r in records if wire_kind(r) == "P"], "pause lines after the cancel"
    assert [e[0] for e in w.events] == ["cancelled"]
    sent = [r.cmd for r in records if wire_kind(r) == "C"]
    undo = [c for c in sent if c.startswith(("RESTORE_GCODE_STATE", "SET_IDLE_TIMEOUT", "M84 S", "M86 S"))]
    assert not undo, f"restored without a pause: {sent}"


# ---------------------------------------------------------------------------------------------------------
# disconnects


def drop_connection_now(rig):
    """What !!DEBUG:drop_connection does, without waiting for the printer to read it (it may be asleep in
    an M109): every further read and write raises; the empty line wakes the comm's pending read."""
    rig.virtual_printer._debug_drop_connection = True
    rig.virtual_printer.outgoing.put("")


class DropOnSendPort(OctoPrintPort):
    """Drops the printer connection right when the controller sends its first line tagged `tag` (the
    pause lines or the restore lines), and waits until OctoPrint has noticed."""

    def __init__(self, rig, tag):
        super().__init__(*rig.port_args)
        self._rig = rig
        self.tag = tag
        self.dropped = False

    def send(self, lines, tags):
        if self.tag in tags and not self.dropped:
            self.dropped = True
            drop_connection_now(self._rig)
            wait_until(lambda: self._rig.comm is None, 10, "connection closed")
        super().send(lines, tags)


# Printer.commands() drops lines without a word once the connection is gone: the adapter must raise, or
# the controller would announce pause lines, or a resume, that never reached the printer.
@pytest.mark.parametrize("phase", ["pausing", "paused", "sending pause lines", "resuming"])
def test_disconnect_during_a_pause_leaves_the_controller_idle(rig, wired, tmp_path, phase):
    """The printer disconnects while pausing (waiting in a long M109), paused, while the pause lines go
    out, while resuming: the controller ends up idle with an error saying why, no hold kept, no traceback
    from our code, and an accepted pause is announced to have ended."""
    tag = {"sending pause lines": "safepause:pause", "resuming": "safepause:resume"}.get(phase)
    port = DropOnSendPort(rig, tag) if tag else rig.port()
    w = wired(port=port, hold_timeout=3.0 if phase == "pausing" else 1.0)
    controller = w.controller
    with LogTrap() as trap:
        if phase == "pausing":
            rig.debug("sleep_after_next M109 5")
        rig.print_file(SMALL)
        if phase == "pausing":
            wait_stuck_in(rig, "M109")
            controller.pause()
            time.sleep(0.2)
            assert controller.state == PAUSING
            drop_connection_now(rig)
            rig.wait_event("Disconnected", timeout=5)
            # the wait for the hold ends at the disconnect, not after hold_timeout (3 s)
            wait_until(lambda: controller.state == IDLE, 1.5, "controller idle at once", rig)
        else:
            wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
            controller.pause()
            if phase != "sending pause lines":
                wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
            if phase == "paused":
                rig.debug("drop_connection")
            elif phase == "resuming":
                controller.resume()
        rig.wait_event("Disconnected", timeout=15)
        wait_until(lambda: controller.state == IDLE, 10, "controller idle", rig)
        assert not controller.holding
    state = controller.get_state()
    assert not trap.ours(), "\n".join(trap.ours())
    assert state["error"], state
    names = [e[0] for e in w.events]
    # "paused" is announced once the pause lines went out: not when the connection drops before the hold
    # (pausing) or under the pause lines; then the end of the accepted pause is announced, once
    expected = {
        "pausing": ["cancelled"],
        "sending pause lines": ["cancelled"],
        "paused": ["paused", "cancelled"],
        "resuming": ["paused", "cancelled"],
    }[phase]
    assert names == expected, (w.events, state["error"])
    rig.connect()
    assert rig.hold_count() == 0


# ---------------------------------------------------------------------------------------------------------
# shutdown


def test_stop_during_a_hold_keeps_the_job_held_and_streams_nothing(rig, wired):
    """controller.stop() is OctoPrint's on_shutdown; the serial connection lives on until the process
    exits. Releasing the hold then would stream the file on from the park position, lifted, retracted,
    in the pause's modes (M83 while file 09 is M82) and without the saved line: the job stays held, the
    controller thread ends, nothing raises. (The brief's first wording was "stop() releases the hold";
    the controller keeps it since 71d8787, after this test showed what releasing does.)"""
    w = wired(hold_timeout=0.5)
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        wait_until(lambda: any(wire_kind(r) == "P" for r in rig.records()), 5, "pause lines", rig)
        before = len(file_records(rig))
        controller.stop()
        assert controller._thread is not None and not controller._thread.is_alive()
        assert rig.hold_count() == 1, "the hold must outlive the controller (the process exit ends it)"
        time.sleep(0.3)  # a window in which no file line may go out
        assert len(file_records(rig)) == before, "file lines streamed after stop()"
        # the test stands in for the process exit: cancel, then drop the count the controller kept
        rig.cancel()
        w.port.set_hold(False)
        assert rig.wait_done(20) == "PrintCancelled"
    assert not trap.ours(), "\n".join(trap.ours())


def test_stop_when_idle_holds_nothing(rig, wired):
    w = wired(hold_timeout=0.5)
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        w.controller.stop()
        assert rig.hold_count() == 0
        assert rig.wait_done(30) == "PrintDone"
    assert check_file_lines(rig.records(), SMALL).ok
    assert not trap.ours(), "\n".join(trap.ours())


@pytest.mark.parametrize("event", ["Disconnecting"])
def test_disconnecting_event_during_a_hold_streams_nothing(rig, wired, event):
    """Disconnecting announces that the connection is about to end; until it does, releasing the hold
    streams the file from the park position like stop() used to (see the test above). OctoPrint's
    shutdown reaches the plugin as on_shutdown -> controller.stop(), tested above, not as an event."""
    w = wired(hold_timeout=0.5)
    controller = w.controller
    rig.print_file(SMALL)
    wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
    controller.pause()
    wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
    wait_until(lambda: any(wire_kind(r) == "P" for r in rig.records()), 5, "pause lines", rig)
    before = len(file_records(rig))
    # delivered on the controller thread, as the event bus does; Printer.disconnect() closes the port
    # only after firing Disconnecting (and close() first sends beforePrinterDisconnected and waits for
    # the queues), OctoPrint calls on_shutdown right after firing Shutdown: in both races the event can
    # be handled while the connection is still up, which is what this test does
    controller.on_printer_event(event, {})
    deadline = time.monotonic() + 1.0
    while controller.state == PAUSED and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.3)  # a window in which no file line may go out
    controller.stop()  # OctoPrint's on_shutdown; for Disconnecting, the close that follows ends the hold
    after = file_records(rig)[before:]
    if rig.comm is not None:
        rig.cancel()
        while rig.hold_count():
            rig.comm.set_job_on_hold(False)
        rig.wait_done(20)
    assert not after, (
        f"{len(after)} file lines went out after {event} during the hold, first {after[0].cmd!r}"
    )


# ---------------------------------------------------------------------------------------------------------
# another plugin holding the job


def test_another_plugins_hold_before_our_pause_is_left_intact(rig, wired):
    w = wired(hold_timeout=0.5)
    controller, port = w.controller, w.port
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        port.set_hold(True)  # "another plugin"
        assert rig.hold_count() == 1
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)  # the fallback: no line comes
        assert rig.hold_count() == 2 and controller.get_state()["saved_line"] is None
        controller.resume()
        # resumed: our count given back (a moment after idle), the other plugin's stays
        wait_until(lambda: controller.state == IDLE and rig.hold_count() == 1, 5, "resumed", rig)
        lines = len(file_records(rig))
        time.sleep(0.2)
        assert len(file_records(rig)) == lines, "file lines went out while the other plugin still holds"
        port.set_hold(False)
        assert_clean_end(rig, controller, SMALL, [None], trap)


def test_another_plugins_hold_during_our_pause_is_left_intact(rig, wired):
    w = wired(hold_timeout=0.5)
    controller, port = w.controller, w.port
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        saved = controller.get_state()["saved_line"]
        port.set_hold(True)  # another plugin takes and releases a count during our hold
        port.set_hold(True)
        assert rig.hold_count() == 3
        port.set_hold(False)
        lines = len(file_records(rig))
        controller.resume()
        # resumed: our count given back (a moment after idle), the other plugin's stays
        wait_until(lambda: controller.state == IDLE and rig.hold_count() == 1, 5, "resumed", rig)
        wait_until(lambda: any(TAG_RESEND in (r.tags or ()) for r in rig.records()), 5, "re-send", rig)
        time.sleep(0.2)
        assert len(file_records(rig)) == lines + 1, "only the re-sent line may go out while still held"
        port.set_hold(False)
        assert_clean_end(rig, controller, SMALL, [saved], trap)


# ---------------------------------------------------------------------------------------------------------
# a long hold


@pytest.mark.parametrize(
    "settings,went_off,waits",
    [
        ({"hotend_off_after": 0.01}, ["M104 T0 S0"], ["M109"]),
        ({"hotend_off_after": 0.01, "bed_off_after": 0.01}, ["M104 T0 S0", "M140 S0"], ["M109", "M190"]),
    ],
    ids=["hotend", "hotend and bed"],
)
def test_long_hold_heater_policy_switches_heaters_off_and_resume_waits_for_them_before_extruding(
    rig, wired, settings, went_off, waits
):
    """hotend_off_after (and bed_off_after) 0.01 min: during the hold the virtual printer gets M104 T0 S0
    (and M140 S0), tagged as pause lines; on resume it gets M109 (and M190) for the print's own targets,
    read from the file lines it printed (not from the controller's snapshot), before the first line that
    pushes filament (E followed over everything it received by an independent model: the restore's
    un-retract, the re-sent line, the file) and before the re-sent line; every line once."""
    w = wired(hold_timeout=0.5, **settings)
    controller = w.controller
    with LogTrap() as trap:
        rig.print_file(SMALL)
        wait_until(lambda: filepos(rig) > 60_000, 20, "position", rig)
        controller.pause()
        wait_until(lambda: controller.state == PAUSED, 5, "paused", rig)
        saved = controller.get_state()["saved_line"]
        wait_until(lambda: controller.get_state()["heaters_off"], 15, "heater policy", rig)
        wait_until(
            lambda: all(any(r.cmd == line for r in rig.records()) for line in went_off), 10, "heaters off", rig
        )
        controller.resume()
        assert_clean_end(rig, controller, SMALL, [saved], trap)
    records = rig.records()
    commands = [r.cmd for r in records]
    kinds = [wire_kind(r) for r in records]
    first_pause, first_resume = kinds.index("P"), kinds.index("U")
    resend = next(i for i, r in enumerate(records) if TAG_RESEND in (r.tags or ()))
    off = [c for c, k in zip(commands, kinds) if k == "P" and c.startswith(("M104", "M140", "M109", "M190"))]
    assert off == went_off, off
    assert all(first_pause < commands.index(line) < first_resume for line in went_off), commands[first_pause:]
    printed = [r.cmd for r in records[:first_pause] if r.fileline is not None]
    targets = {
        "M109": last_s_value(printed, ("M104", "M109")),
        "M190": last_s_value(printed, ("M140", "M190")),
    }
    assert targets == {"M109": 205, "M190": 60}  # file 09 after its first layer
    assert_reheated_before_extruding(commands, first_resume, resend, targets, waits)
