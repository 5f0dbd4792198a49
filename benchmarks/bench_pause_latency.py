"""How fast a SafePause pause takes effect, and how fast a resume prints on, with the real pipeline.

A real PauseController is wired to OctoPrint's real MachineCom talking to its real VirtualPrinter (the
in-process rig of tests/integration/rig.py, moves instant), printing real slicer files from
the repository's corpus (tests/gcode). Many pauses (default 50) at random moments in one run, each held briefly and resumed:

  request -> hold taken     controller.pause() until the job hold is taken (the queuing hook takes it
                            synchronously on the comm thread when it suppresses the next file line; the
                            controller itself only after hold_timeout when no line comes)
  request -> paused         controller.pause() until the "paused" event (pause G-code queued)
  file lines after request  file lines written to the printer after controller.pause() returned, until
                            the pause ended (goal: none beyond the one already in flight, i.e. <= 1)
  resume -> saved line      controller.resume() until the re-sent saved line is written to the printer
  resume -> next file line  controller.resume() until the first line read from the file after the hold
                            is written

    python benchmarks/bench_pause_latency.py [--pauses 50] [--seed 1] [--hold 0.02]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO))

FILES = ("01_", "02_", "12_", "04_")  # long prints; the next one starts if the pauses outlast one


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class Timeline:
    """Timestamps from OctoPrint's own threads: the hold (queuing hook / port) and every file line
    written (sent hook, on the sending thread right after the write)."""

    def __init__(self, controller):
        self.controller = controller
        self.lock = threading.Lock()
        self.hold_at: float | None = None
        self.sent: list[tuple[float, int, bool]] = []  # (time, fileline, re-sent)

    def queuing(self, comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
        holding = self.controller.holding
        result = self.controller.on_queuing(comm, phase, cmd, cmd_type, gcode, *args, **kwargs)
        if not holding and self.controller.holding and self.hold_at is None:
            self.hold_at = time.monotonic()
        return result

    def on_set_hold(self, value):
        if value and self.hold_at is None:
            self.hold_at = time.monotonic()

    def sent_hook(self, comm, phase, cmd, cmd_type, gcode, *args, tags=None, **kwargs):
        if tags and "source:file" in tags:
            line = int(next(t[9:] for t in tags if t.startswith("fileline:")))
            with self.lock:
                self.sent.append((time.monotonic(), line, "safepause:resend" in tags))

    def sent_after(self, t0, t1=None):
        with self.lock:
            return [s for s in self.sent if s[0] > t0 and (t1 is None or s[0] <= t1)]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pauses", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0.02, help="seconds each pause is held")
    args = parser.parse_args()

    import logging

    logging.getLogger("octoprint").setLevel(logging.WARNING)
    from rig import CORPUS_GCODE, Rig, check_file_lines, flavour_for_gcode, wire_controller

    from octoprint_safepause.adapter.octoprint_port import OctoPrintPort
    from octoprint_safepause.core.controller import IDLE, PAUSED

    rng = random.Random(args.seed)
    basedir = tempfile.mkdtemp(prefix="bench-pause-")
    rig = Rig.instance(basedir=basedir)
    rig.connect()

    class TimedPort(OctoPrintPort):
        timeline = None

        def set_hold(self, value):
            super().set_hold(value)
            if self.timeline is not None:
                self.timeline.on_set_hold(value)

    port = TimedPort(*rig.port_args)
    wired = wire_controller(rig, port=port, hold_timeout=2.0)
    controller = wired.controller
    timeline = port.timeline = Timeline(controller)
    rig.hooks["queuing"] = timeline.queuing
    rig.hooks["sent"] = timeline.sent_hook

    rows = {k: [] for k in ("hold", "paused", "lines", "resend", "next")}
    files = [next(CORPUS_GCODE.glob(prefix + "*.gcode")) for prefix in FILES]
    done = 0
    started = time.monotonic()
    checks = []
    for path in files:
        if done >= args.pauses:
            break
        wired.flavour = flavour_for_gcode(path.name)
        rig.print_file(path)
        rig.wait_for(lambda: (rig.comm.getFilePosition() or {}).get("pos", 0) > 30_000, timeout=30)
        while done < args.pauses and rig.state_id() == "PRINTING":
            time.sleep(rng.uniform(0.01, 0.08))  # let it stream a random while
            timeline.hold_at = None
            n_events = len(wired.events)
            t_req = time.monotonic()
            if not controller.try_(controller.pause, reason="bench", source="bench"):
                break
            rig.wait_for(
                lambda n=n_events: len(wired.events) > n or controller.state == IDLE,
                timeout=10,
                interval=0.0005,
            )
            if controller.state != PAUSED:
                break
            t_paused = next(e[2] for e in wired.events[n_events:] if e[0] == "paused")  # emit()'s time
            time.sleep(args.hold)
            saved = controller.get_state()["saved_line"]
            t_res = time.monotonic()
            lines_in_pause = [s for s in timeline.sent_after(t_req, t_res) if not s[2]]
            controller.resume()
            rig.wait_for(
                lambda t=t_res, n=2 if saved else 1: len(timeline.sent_after(t)) >= n,
                timeout=10,
                interval=0.0005,
            )
            after = timeline.sent_after(t_res)
            rows["hold"].append(timeline.hold_at - t_req)
            rows["paused"].append(t_paused - t_req)
            rows["lines"].append(len(lines_in_pause))
            if saved:
                rows["resend"].append(after[0][0] - t_res)
                rows["next"].append(after[1][0] - t_res)
            else:
                rows["next"].append(after[0][0] - t_res)
            done += 1
        result = rig.wait_done(300)
        report = check_file_lines(rig.records(), path)
        checks.append(f"{path.name[:2]} {result} lines {'OK' if report.ok else report}")
    elapsed = time.monotonic() - started
    controller.stop()
    rig.shutdown()

    def ms(values):
        return [f"{v * 1000:.2f}" for v in (statistics.median(values), percentile(values, 0.95), max(values))]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"SafePause pause latency: {done} pauses over real files ({', '.join(checks)}), hold {args.hold * 1000:.0f} ms, "
        f"{elapsed:.1f} s, load avg {load:.2f}, {os.cpu_count()} cores"
    )
    print(f"| {'metric':<30} | {'median':>8} | {'p95':>8} | {'max':>8} | {'n':>3} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 5}|")
    labels = [
        ("hold", "request -> hold taken (ms)"),
        ("paused", "request -> paused (ms)"),
        ("resend", "resume -> saved line (ms)"),
        ("next", "resume -> next file line (ms)"),
    ]
    for key, label in labels:
        if rows[key]:
            median, p95, top = ms(rows[key])
            print(f"| {label:<30} | {median:>8} | {p95:>8} | {top:>8} | {len(rows[key]):>3} |")
    lines = rows["lines"]
    print(
        f"| {'file lines after request':<30} | {statistics.median(lines):>8.0f} | {percentile(lines, 0.95):>8.0f} | "
        f"{max(lines):>8} | {len(lines):>3} |"
    )
    print(f"pauses with more than 1 file line after the request: {sum(v > 1 for v in lines)} (goal: 0)")


if __name__ == "__main__":
    main()
