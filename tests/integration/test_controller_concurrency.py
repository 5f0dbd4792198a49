"""A real PauseController on the rig under concurrent requests: the issue's proof, part 4.

While a print streams, several threads fire pause / resume / cancel through controller.try_ at random,
and another thread plays OctoPrint's user: its own Pause / Resume (comm.setPause) and, rarely, Cancel
(comm.cancelPrint). A watchdog samples the hold counter the whole time. Afterwards: no thread hangs (else
every thread's stack is in the failure message), no hold is leaked or doubled, every file line that
went out went out once and in order, and each pause announced is announced to have ended, once.

Lost lines: every file line of the print reached the printer exactly once, in order, or the queuing hook
saved it and a cancel dropped it and said so ("SafePause dropped N saved line(s) on cancel"); as a cancel
ends the print, those are the last lines read. `tests/wire_checks.LineLedger` wraps the controller's hook
to see what it saved and counts the cancels' reports. (Checking only that the delivered lines are in
order and once cannot see a line that went missing.)
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
import threading
import time
import traceback

import pytest
from rig import (
    CORPUS_GCODE,
    LogTrap,
    check_file_lines,
    file_lines,
    octoprint_blocks,
    unwire_controller,
    wire_controller,
)

from octoprint_safepause.core.controller import IDLE, PAUSED
from tests.wire_checks import LineLedger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SEED = int(os.environ.get("SAFEPAUSE_SEED", "20251125"))
PATH = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"
ROUNDS = 5
CHAOS_SECONDS = 4.0  # per round; a round also ends with its print (a cancel)
FINAL_CANCEL_AT = 0.4  # the last round: chaos until this share of the file, then a cancel while paused
JOIN_TIMEOUT = 10.0


def all_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        out.append(f"--- thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(out)


class Watchdog(threading.Thread):
    """Samples the hold counter: it must never exceed 1 (only SafePause holds here)."""

    def __init__(self, rig):
        super().__init__(name="test-watchdog", daemon=True)
        self.rig = rig
        self.stop = threading.Event()
        self.max_hold = 0
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            count = self.rig.hold_count()
            if count is not None:
                self.max_hold = max(self.max_hold, count)
                self.samples += 1
            time.sleep(0.001)


def join_or_dump(threads, timeout, what):
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        pytest.fail(f"deadlock? {what}: threads {alive} still alive after {timeout}s\n{all_stacks()}")


def settle(rig, controller, deadline):
    """End the round: resume our pause and OctoPrint's own, until the print is over."""
    while True:
        if time.monotonic() > deadline:
            pytest.fail(f"print did not end: controller {controller.state}; {rig.diagnose()}\n{all_stacks()}")
        state_id = rig.state_id()
        ended = any(e[0] in ("PrintDone", "PrintCancelled", "PrintFailed") for e in rig.fired())
        if ended and state_id in ("OPERATIONAL", "OFFLINE", "ERROR") and controller.state == IDLE:
            return
        if controller.state == PAUSED:
            controller.try_(controller.resume)
        elif state_id == "PAUSED" and controller.state == IDLE:
            rig.comm.setPause(False, tags={"trigger:test.settle"})
        time.sleep(0.01)


def cancel_while_paused_on_a_saved_line(rig, controller, deadline) -> str:
    """End the round with a SafePause cancel while paused on a saved line (the chaos may leave OctoPrint
    paused, or a pause held by the fallback without one: those are resumed first). Returns the line."""
    while True:
        if time.monotonic() > deadline:
            pytest.fail(f"no pause on a saved line: controller {controller.state}; {rig.diagnose()}")
        state_id = rig.state_id()
        if controller.state == PAUSED:
            saved = controller.get_state()["saved_line"]
            if saved is not None:
                controller.cancel()
                return saved
            controller.try_(controller.resume)
        elif controller.state == IDLE and state_id == "PRINTING":
            controller.try_(controller.pause, reason="final", source="test")
        elif controller.state == IDLE and state_id == "PAUSED":
            rig.comm.setPause(False, tags={"trigger:test.settle"})
        elif state_id not in ("PRINTING", "PAUSED", "PAUSING", "RESUMING"):
            pytest.fail(f"the print ended ({state_id}) before the final cancel; {rig.diagnose()}")
        time.sleep(0.005)


@pytest.fixture
def wired(rig):
    w = wire_controller(rig, hold_timeout=0.5)
    yield w
    unwire_controller(rig, w)


def test_random_requests_from_many_threads_while_printing(rig, wired):
    controller = wired.controller
    lines = file_lines(PATH)
    blocked = {n for n, line in enumerate(lines, 1) if octoprint_blocks(line)}
    results = []
    for round_ in range(ROUNDS):
        rng = random.Random(f"{SEED}:concurrency:{round_}")
        where = f"(seed {SEED}, round {round_})"
        stop = threading.Event()
        errors: list[str] = []
        counts = dict.fromkeys(["pause", "resume", "cancel", "native pause", "native cancel"], 0)
        lock = threading.Lock()

        # rounds 0 and 1 without SafePause cancels (they end the print), then with a few; the last round
        # without random cancels, ended by a cancel while paused on a saved line (random cancels mostly
        # land while pausing, when nothing is saved yet: without it nothing would check a drop report)
        final_cancel = round_ == ROUNDS - 1
        cancel_weight = 0 if round_ < 2 or final_cancel else 0.3
        native_cancel = 0 if final_cancel else 0.05

        def requester(seed, stop=stop, errors=errors, counts=counts, lock=lock, cancel_weight=cancel_weight):
            local = random.Random(seed)
            actions = [
                ("pause", controller.pause),
                ("resume", controller.resume),
                ("cancel", controller.cancel),
            ]
            weights = [10, 10, cancel_weight]
            try:
                while not stop.is_set():
                    name, action = local.choices(actions, weights)[0]
                    kwargs = {"reason": f"r{seed % 100}", "source": "thread"} if name == "pause" else {}
                    if controller.try_(action, **kwargs):
                        with lock:
                            counts[name] += 1
                    time.sleep(local.random() * 0.03)
            except Exception as error:  # anything but Refused escaping is a failure
                errors.append(f"{type(error).__name__}: {error}")

        def octoprint_user(seed, stop=stop, errors=errors, counts=counts, native_cancel=native_cancel):
            """OctoPrint's own buttons: a short native pause now and then, rarely a cancel."""
            local = random.Random(seed)
            tags = {"source:api", "api:job", "trigger:test.user"}
            try:
                while not stop.wait(local.uniform(0.3, 1.0)):
                    comm = rig.comm
                    if comm is None:
                        continue
                    if local.random() < native_cancel:
                        comm.cancelPrint(tags=tags)
                        counts["native cancel"] += 1
                        continue
                    comm.setPause(True, tags=tags)
                    stop.wait(local.uniform(0.02, 0.2))
                    comm.setPause(False, tags=tags)
                    counts["native pause"] += 1
            except Exception as error:
                errors.append(f"octoprint user: {type(error).__name__}: {error}")

        watchdog = Watchdog(rig)
        ledger = LineLedger()
        rig.hooks["queuing"] = ledger.hook(controller.on_queuing)
        with LogTrap() as trap, ledger.listening(controller._log):
            rig.print_file(PATH)
            rig.wait_for(lambda: (rig.comm.getFilePosition() or {}).get("pos", 0) > 20_000, timeout=20)
            watchdog.start()
            threads = [
                threading.Thread(
                    target=requester, args=(rng.randrange(10**6),), name=f"requester-{i}", daemon=True
                )
                for i in range(3)
            ] + [
                threading.Thread(
                    target=octoprint_user, args=(rng.randrange(10**6),), name="user", daemon=True
                )
            ]
            for thread in threads:
                thread.start()
            # the chaos runs this long, or until the print ends (the last round: until FINAL_CANCEL_AT)
            deadline = time.monotonic() + CHAOS_SECONDS
            stop_at = PATH.stat().st_size * FINAL_CANCEL_AT if final_cancel else math.inf
            while (
                time.monotonic() < deadline
                and not any(e[0] in ("PrintDone", "PrintCancelled", "PrintFailed") for e in rig.fired())
                and (rig.comm.getFilePosition() or {}).get("pos", 0) < stop_at
            ):
                time.sleep(0.01)
            stop.set()
            join_or_dump(threads, JOIN_TIMEOUT, f"request threads {where}")
            if final_cancel:
                final_saved = cancel_while_paused_on_a_saved_line(rig, controller, time.monotonic() + 30)
            settle(rig, controller, time.monotonic() + 60)
            watchdog.stop.set()
            join_or_dump([watchdog], JOIN_TIMEOUT, f"watchdog {where}")
            result = rig.wait_done(10)

        assert not errors, f"{errors} {where}"
        assert rig.hold_count() == 0 and not controller.holding, f"hold leaked {where}"
        assert watchdog.max_hold <= 1, f"hold counter reached {watchdog.max_hold} {where}"
        assert not trap.ours(), "\n".join(trap.ours())
        records = rig.records()
        report = check_file_lines(records, PATH, complete=result == "PrintDone")
        assert report.ok, f"{report} {where}"
        delivered = [r.fileline for r in records if r.fileline is not None]
        done = result == "PrintDone"
        problems = ledger.problems(delivered, total=len(lines) if done else None, blocked=blocked)
        assert not problems, f"{problems} ({ledger.summary()}) {where}"
        dropped = ledger.dropped(delivered)
        if done:
            assert not dropped, f"the print ran to its end, yet {dropped} never went out {where}"
        elif dropped:
            # the cancel ended the print: what it dropped are the last lines OctoPrint read
            assert min(dropped) > max(delivered), f"dropped {dropped}, delivered up to {max(delivered)} {where}"
        if final_cancel:
            assert result == "PrintCancelled", where
            # one cancel, dropping what its pause saved (one line, or the few read while the hold was
            # being taken): the lines right after the last one delivered, the first being the saved line
            after = max(delivered) + 1
            assert len(ledger.drops) == 1, (ledger.drops, where)
            assert dropped == list(range(after, after + ledger.drops[0])), (ledger.drops, dropped, where)
            assert lines[after - 1] == final_saved, (dropped, final_saved, where)
        names = "".join({"paused": "p", "resumed": "r", "cancelled": "c"}[e[0]] for e in wired.events)
        assert re.fullmatch(r"(p[rc]|c)*", names), f"events out of order: {names} {where}"
        wired.events.clear()
        results.append((result, dict(counts), names.count("p"), names.count("c"), ledger.summary()))
        if controller.state != IDLE:
            pytest.fail(f"controller {controller.state} after the round {where}")
    print("rounds (result, accepted requests, paused events, cancelled events, lines):", results)
