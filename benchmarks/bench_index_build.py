"""Does building a recovery index make the print stutter? OctoPrint's send rate with and without a build.

    python benchmarks/bench_index_build.py            (SIZE_MB=100 WINDOW=8 REPEATS=3)

When a print starts, SafePause builds a checkpoint index of its file in the background (core/recovery/
index.py), in a child process at a lower priority. This streams a corpus file through
OctoPrint's real Printer + MachineCom to the virtual printer (instant moves: the host is the bottleneck,
a worst case) for WINDOW seconds, while an index of a SIZE_MB file is built the way the plugin builds
it, and without; it prints the lines sent per second and the longest gaps between two lines sent, as
ratios to the run without a build. Ratios come from one run on one machine: compare them, not the
absolute figures, across machines.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import _setup  # noqa: F401  (the repository on sys.path)

sys.path.insert(0, str(_setup.REPO / "tests" / "integration"))

from bench_recovery import build_file  # noqa: E402

from octoprint_safepause.core.recovery.index import IndexStore  # noqa: E402

FILE = "02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode"


class Sends:
    """The times at which file lines were written (OctoPrint's `sent` phase, on its send thread)."""

    def __init__(self):
        self.times: list[float] = []

    def hook(self, comm, phase, cmd, cmd_type, gcode, *args, tags=None, **kwargs):
        if tags and "source:file" in tags:
            self.times.append(time.perf_counter())


def run(rig, path, window: float, build) -> dict:
    sends = Sends()
    rig.hooks["sent"] = sends.hook
    rig.print_file(path)
    time.sleep(1.0)  # past the start G-code and heat-up
    sends.times.clear()
    stop = build() if build else None
    time.sleep(window)
    times = list(sends.times)
    if stop:
        stop()
    rig.cancel()
    rig.wait_done(60)
    rig.hooks.pop("sent", None)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return {
        "rate": len(times) / window,
        "p99": gaps[int(len(gaps) * 0.99)] * 1000,
        "p999": gaps[int(len(gaps) * 0.999)] * 1000,
        "max": gaps[-1] * 1000,
        "median": statistics.median(gaps) * 1000,
    }


def plugin_build(big: Path, folder: Path):
    """What the plugin does at PrintStarted (IndexStore.build on a thread of OctoPrint's process)."""

    def start():
        for old in folder.rglob("*.idx*"):  # a fresh build each time
            old.unlink()
        store = IndexStore(folder, spawn=_daemon, logger=logging.getLogger("bench"))
        from octoprint_safepause.core.gcode import fastscan

        store.build(str(big), fastscan.fingerprint(big), "marlin", 1)
        return store.stop

    return start


def thread_build(big: Path, folder: Path):
    """The former way, for comparison: fastscan.build_index on a thread of OctoPrint's process, yielding
    0.5 ms between chunks."""

    def start():
        from octoprint_safepause.core.gcode import fastscan

        stop = threading.Event()
        target = folder / "thread.idx"
        for old in folder.rglob("*.idx*"):
            old.unlink()
        _daemon(
            lambda: fastscan.build_index(big, "marlin", target, cancelled=stop.is_set, yield_every=0.0005, tools=1),
            "bench-thread-build",
        )
        return stop.set

    return start


def _daemon(fn, name):
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


def main():
    logging.getLogger("octoprint").setLevel(logging.WARNING)
    from rig import CORPUS_GCODE, Rig

    size_mb = float(os.environ.get("SIZE_MB", "100"))
    window = float(os.environ.get("WINDOW", "8"))
    repeats = int(os.environ.get("REPEATS", "3"))
    rig = Rig.instance(basedir=tempfile.mkdtemp(prefix="bench-index-"))
    rig.connect()
    path = CORPUS_GCODE / FILE
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.gcode"
        build_file(sorted(CORPUS_GCODE.glob("*.gcode")), int(size_mb * 1e6), big)
        folder = Path(tmp) / "index"
        folder.mkdir()
        results: dict = {"without": [], "with": [], "thread": []}
        for _ in range(repeats):  # interleaved, so that drift hits all alike
            results["without"].append(run(rig, path, window, None))
            results["with"].append(run(rig, path, window, plugin_build(big, folder)))
            results["thread"].append(run(rig, path, window, thread_build(big, folder)))
    rig.shutdown()

    def best(rows, key, low=False):
        values = [row[key] for row in rows]
        return min(values) if low else max(values)

    base = results["without"]
    print(f"Streaming {FILE} to the virtual printer (instant moves), {window:g} s windows, best of {repeats};")
    print(f"an index of a {size_mb:g} MB file built meanwhile; ratios to no build:")
    print("| the build runs | lines/s | median gap | 99th pct gap | 99.9th pct gap | longest gap |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, name in (("without", "not at all"), ("with", "in a child process at nice 10 (the plugin)"),
                      ("thread", "on a thread of OctoPrint's process, yielding (before)")):  # fmt: skip
        rows = results[key]
        cells = [f"{best(rows, 'rate'):.0f} ({best(rows, 'rate') / best(base, 'rate'):.2f})"]
        for gap in ("median", "p99", "p999", "max"):
            value = best(rows, gap, low=True)
            cells.append(f"{value:.2f} ms ({value / best(base, gap, low=True):.1f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
