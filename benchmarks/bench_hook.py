"""What the SafePause queuing hook costs per line inside OctoPrint's real command pipeline.

The plugins are loaded by OctoPrint's real plugin manager (so each hook carries OctoPrint's own
wrapper), and every line of the corpus (tests/gcode) goes through a real, unconnected `MachineCom`'s
`_process_command_phase("queuing", ...)`, the exact code that calls queuing hooks for every line.
Variants, measured interleaved in one run (best of N):

  none       no queuing hook at all
  noop       one hook that returns None (the floor for any plugin that registers this hook)
  safepause  SafePause's hook, idle (no pause armed): the cost of having the plugin installed
  scheduled  the same with a scheduled stop ahead (its line never comes): the moves of the file are
             looked at for the stop's filepos tag
  tracking   for comparison: a hook that feeds every line to the state tracker (the design avoided)

The goal from the issue: SafePause's added cost at most 1.5x the no-op hook's added cost.

    python benchmarks/bench_hook.py [--repeats 5] [--gcode DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from _setup import GCODE_DIR  # noqa: E402, I001

NOOP_PLUGIN = """
__plugin_name__ = "bench_noop"
__plugin_pythoncompat__ = ">=3.7,<4"

def noop(comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
    return None

__plugin_hooks__ = {"octoprint.comm.protocol.gcode.queuing": noop}
"""


# The file's own pause points (file 11's M600, M601): SafePause pauses there, so they are no idle line
PAUSE_POINTS = frozenset(["M0", "M1", "M25", "M600", "M601"])


def corpus_lines(folder: Path):
    """(cmd, gcode, tags) as OctoPrint's reader would queue them: comment-stripped, with file tags;
    without the file's own pause points."""
    from octoprint.util.comm import gcode_and_subcode_for_cmd, process_gcode_line

    out = []
    for path in sorted(folder.glob("*.gcode")):
        pos = 0
        fileline = 0
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            for raw in handle:
                pos += len(raw.encode("utf-8"))
                cmd = process_gcode_line(raw)
                if not cmd:
                    continue
                fileline += 1
                gcode, _ = gcode_and_subcode_for_cmd(cmd)
                if gcode in PAUSE_POINTS or cmd.lower().startswith(("@pause", "pause")):
                    continue
                out.append((cmd, gcode, {"source:file", f"filepos:{pos}", f"fileline:{fileline}"}))
    return out


def setup_octoprint(basedir: str):
    import octoprint.plugin
    import octoprint.settings
    from octoprint.printer.profile import PrinterProfileManager
    from octoprint.util.comm import MachineCom, MachineComPrintCallback

    octoprint.settings.settings(init=True, basedir=basedir)
    plugin_folder = os.path.join(basedir, "bench_plugins")
    os.makedirs(plugin_folder, exist_ok=True)
    with open(os.path.join(plugin_folder, "bench_noop.py"), "w") as handle:
        handle.write(NOOP_PLUGIN)
    pm = octoprint.plugin.plugin_manager(
        init=True, plugin_folders=[plugin_folder], plugin_entry_points=["octoprint.plugin"]
    )
    pm.reload_plugins(startup=True, initialize_implementations=False)
    hooks = pm.get_hooks("octoprint.comm.protocol.gcode.queuing")
    missing = {"bench_noop", "safepause"} - set(hooks)
    if missing:
        sys.exit(f"plugins not loaded: {missing} (is OctoPrint-SafePause installed in this venv?)")
    comm = MachineCom("VIRTUAL", 115200, MachineComPrintCallback(), PrinterProfileManager())
    controller = pm.get_plugin_info("safepause").implementation.controller
    return comm, hooks, controller


def measure(comm, hook_map, lines, repeats):
    process = comm._process_command_phase
    comm._gcode_hooks["queuing"] = hook_map
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        start = time.perf_counter()
        for cmd, gcode, tags in lines:
            process("queuing", cmd, gcode=gcode, tags=tags)
        best = min(best, time.perf_counter() - start)
        gc.enable()
    return best


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gcode", default=os.environ.get("SAFEPAUSE_GCODE", str(GCODE_DIR))
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from octoprint_safepause.core.gcode import StateTracker

    with tempfile.TemporaryDirectory(prefix="safepause-bench-") as basedir:
        comm, hooks, controller = setup_octoprint(basedir)
        lines = corpus_lines(Path(args.gcode))
        tracker = StateTracker()
        wrapped_noop = hooks["bench_noop"]
        from octoprint.util import time_this

        from octoprint_safepause.core.schedule import Schedule, Stop

        # a stop whose line never comes: every move is looked at, none matches
        ahead = Schedule("bench.gcode", "bench.gcode", (), stops=[Stop("bench", "layer", 1, end=-1)])

        def tracking(comm, phase, cmd, cmd_type, gcode, *a, **k):
            tracker.feed(cmd)

        variants = {
            "none": {},
            "noop": {"bench_noop": wrapped_noop},
            "safepause": {"safepause": hooks["safepause"]},
            "scheduled": {"safepause": hooks["safepause"]},
            "tracking": {"tracking": time_this(logtarget="bench", expand_logtarget=True)(tracking)},
        }
        totals = {name: float("inf") for name in variants}
        for _ in range(args.repeats):  # interleaved rounds, so drift hits every variant alike
            for name, hook_map in variants.items():
                controller.set_schedule(ahead if name == "scheduled" else None)
                totals[name] = min(totals[name], measure(comm, hook_map, lines, 1))
            controller.set_schedule(None)

    n = len(lines)
    per = {name: total / n * 1e6 for name, total in totals.items()}
    added = {name: per[name] - per["none"] for name in per}
    print(f"lines through MachineCom._process_command_phase('queuing'): {n}, best of {args.repeats}")
    print(f"{'variant':<10} {'us/line':>8} {'added us/line':>14}")
    for name in variants:
        print(f"{name:<10} {per[name]:8.3f} {added[name]:14.3f}")
    ratio = added["safepause"] / added["noop"] if added["noop"] > 0 else float("nan")
    print(f"safepause added cost / no-op hook added cost: {ratio:.2f}x (goal <= 1.5x)")
    scheduled = added["scheduled"] / added["noop"] if added["noop"] > 0 else float("nan")
    print(f"with a stop scheduled: {scheduled:.2f}x")
    print(f"tracking-per-line added cost / no-op: {added['tracking'] / added['noop']:.2f}x")


if __name__ == "__main__":
    main()
