"""Speed and memory of the G-code tracker over the corpus (tests/gcode), in one run.

    python benchmarks/bench_tracker.py [GCODE_DIR]      (or SAFEPAUSE_GCODE_DIR=...; REPEATS=5)

Measures, best of REPEATS: a no-op loop over the lines, a no-op call per line (what any per-line hook
costs at least), StateTracker.feed over every line of every file, and replay_file over each whole file
(read from disk, as at pause time). Then the peak Python memory (tracemalloc) of replaying the largest
file and of the same file concatenated 10 times: equal peaks show memory does not grow with the file.
Prints a Markdown table.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from _setup import best_of, flavour_for, gcode_dir, peak_memory  # noqa: E402, I001

from octoprint_safepause.core.gcode import StateTracker, replay_file  # noqa: E402


def best_of_time(fn, repeats):
    return best_of(fn, repeats)[0]


def main(argv):
    gdir = gcode_dir(argv)
    repeats = int(os.environ.get("REPEATS", "5"))
    files = sorted(gdir.glob("*.gcode"))
    if not files:
        print(f"no .gcode files in {gdir}", file=sys.stderr)
        return 1
    corpus = []
    for path in files:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            corpus.append((path, flavour_for(path.name), fh.readlines()))
    all_lines = [line for _, _, lines in corpus for line in lines]
    n = len(all_lines)
    mb = sum(p.stat().st_size for p in files) / 1e6

    def noop_loop():
        for _line in all_lines:
            pass

    class Noop:
        def feed(self, line):
            pass

    def noop_call():
        feed = Noop().feed
        for line in all_lines:
            feed(line)

    def track():
        for _, flavour, lines in corpus:
            feed = StateTracker(flavour).feed
            for line in lines:
                feed(line)

    rows = []
    t_loop = best_of_time(noop_loop, repeats)
    t_call = best_of_time(noop_call, repeats)
    t_feed = best_of_time(track, repeats)
    rows.append(("no-op loop", n, mb, t_loop))
    rows.append(("no-op call per line", n, mb, t_call))
    rows.append(("StateTracker.feed, all files", n, mb, t_feed))
    t_replay_total = 0.0
    replay_rows = []
    for path, flavour, lines in corpus:
        t = best_of_time(lambda p=path, f=flavour: replay_file(p, 1 << 62, f), repeats)
        t_replay_total += t
        replay_rows.append((f"replay_file {path.name[:40]}", len(lines), path.stat().st_size / 1e6, t))
    rows.append(("replay_file, all files", n, mb, t_replay_total))
    rows.extend(replay_rows)

    print(f"corpus: {len(files)} files in {gdir}, {n} lines, {mb:.1f} MB; best of {repeats}; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    print()
    print("| what | lines | MB | s | lines/s | MB/s | µs/line | × no-op call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lines, size, secs in rows:
        print(
            f"| {name} | {lines} | {size:.2f} | {secs:.3f} | {lines / secs:,.0f} | {size / secs:.1f} "
            f"| {secs / lines * 1e6:.3f} | {secs / lines / (t_call / n):.1f} |"
        )

    # memory: the largest file, and the same file 10 times over
    path, flavour, _ = max(corpus, key=lambda c: c[0].stat().st_size)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "x10.gcode"
        data = path.read_bytes()
        with open(big, "wb") as fh:
            for _ in range(10):
                fh.write(data)
        peak1 = peak_memory(lambda: replay_file(path, 1 << 62, flavour))
        peak10 = peak_memory(lambda: replay_file(big, 1 << 62, flavour))
        t10 = best_of_time(lambda: replay_file(big, 1 << 62, flavour), max(1, repeats // 2))
        size10 = big.stat().st_size / 1e6
    print()
    print("| replay_file memory (tracemalloc peak) | MB on disk | peak KiB | s |")
    print("|---|---:|---:|---:|")
    print(f"| {path.name[:40]} | {len(data) / 1e6:.2f} | {peak1 / 1024:.0f} | |")
    print(f"| same file concatenated 10x | {size10:.2f} | {peak10 / 1024:.0f} | {t10:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
