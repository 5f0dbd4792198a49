"""A real PauseController on the rig under concurrent requests: the issue's proof, part 4.

While a print streams, several threads fire pause / resume / cancel through controller.try_ at random,
and another thread plays OctoPrint's user: its own Pause / Resume (comm.setPause) and, rarely, Cancel
(comm.cancelPrint). A watchdog samples the hold counter the whole time. Afterwards: no thread hangs (else
every thread's stack is in the failure message), no hold is leaked or doubled, every file line that
went out went out once and in order (a cancel may drop the saved line, so a cancelled print is checked
up to its last delivered line), and each pause announced is announced to have ended, once.
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
import time
import traceback

import pytest
from rig import CORPUS_GCODE, LogTrap, check_file_lines, unwire_controller, wire_controller

from octoprint_safepause.controller import IDLE, PAUSED, PAUSING

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SEED = int(os.environ.get("SAFEPAUSE_SEED", "20251125"))
PATH = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"
ROUNDS = 4
CHAOS_SECONDS = 4.0  # per round; a round also ends with its print (a cancel)
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


@pytest.fixture
def wired(rig):
    w = wire_controller(rig, hold_timeout=0.5)
    yield w
    unwire_controller(rig, w)


def test_random_requests_from_many_threads_while_printing(rig, wired):
    controller = wired.controller
    results = []
    for round_ in range(ROUNDS):
        rng = random.Random(f"{SEED}:concurrency:{round_}")
        where = f"(seed {SEED}, round {round_})"
        stop = threading.Event()
        errors: list[str] = []
        counts = dict.fromkeys(["pause", "resume", "cancel", "native pause", "native cancel"], 0)
        lock = threading.Lock()

        # rounds 0 and 1 without SafePause cancels (they end the print), then with a few
        cancel_weight = 0 if round_ < 2 else 0.3

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

        def octoprint_user(seed, stop=stop, errors=errors, counts=counts):
            """OctoPrint's own buttons: a short native pause now and then, rarely a cancel."""
            local = random.Random(seed)
            tags = {"source:api", "api:job", "trigger:test.user"}
            try:
                while not stop.wait(local.uniform(0.3, 1.0)):
                    comm = rig.comm
                    if comm is None:
                        continue
                    if local.random() < 0.05:
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
        with LogTrap() as trap:
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
            # the chaos runs this long, or until the print ends
            deadline = time.monotonic() + CHAOS_SECONDS
            while time.monotonic() < deadline and not any(
                e[0] in ("PrintDone", "PrintCancelled", "PrintFailed") for e in rig.fired()
            ):
                time.sleep(0.01)
            stop.set()
            join_or_dump(threads, JOIN_TIMEOUT, f"request threads {where}")
            settle(rig, controller, time.monotonic() + 60)
            watchdog.stop.set()
            join_or_dump([watchdog], JOIN_TIMEOUT, f"watchdog {where}")
            result = rig.wait_done(10)

        assert not errors, f"{errors} {where}"
        assert rig.hold_count() == 0 and not controller.holding, f"hold leaked {where}"
        assert watchdog.max_hold <= 1, f"hold counter reached {watchdog.max_hold} {where}"
        assert not trap.ours(), "\n".join(trap.ours())
        report = check_file_lines(rig.records(), PATH, complete=result == "PrintDone")
        assert report.ok, f"{report} {where}"
        names = "".join({"paused": "p", "resumed": "r", "cancelled": "c"}[e[0]] for e in wired.events)
        assert re.fullmatch(r"(p[rc]|c)*", names), f"events out of order: {names} {where}"
        wired.events.clear()
        results.append((result, dict(counts), names.count("p"), names.count("c")))
        if controller.state != IDLE:
            pytest.fail(f"controller {controller.state} after the round {where}")
        assert controller.state not in (PAUSING, PAUSED)
    print("rounds (result, accepted requests, paused events, cancelled events):", results)
