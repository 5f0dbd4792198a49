"""How fast the state at a print position is rebuilt for a recovery, on a ~100 MB file, in one run.

    python benchmarks/bench_recovery.py [GCODE_DIR]      (or SAFEPAUSE_GCODE_DIR=...)
    SIZE_MB=100 REPEATS=5 python benchmarks/bench_recovery.py

Builds the file by concatenating copies of the corpus (tests/gcode) in a temporary directory, then at 5 %, 50 %
and 95 % of it measures: reading the prefix (raw bytes, 1 MiB reads: the floor of any scan), the per-line
tracker (replay_file), fastscan.scan without an index (its fallback: the same per-line work) and with the
checkpoint index, plus the one-off index build over the whole file. MB/s is the prefix length over the
time. Every scan is checked against replay_file's state. Peak Python memory (tracemalloc) of a lookup at
95 % and of an index build, on the full file and on a tenth of it: equal peaks show that memory does not
grow with the file. Prints a Markdown table.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from _setup import best_of, gcode_dir, peak_memory  # noqa: E402, I001

from octoprint_safepause.core.gcode import fastscan, replay_file  # noqa: E402

FLAVOUR = "marlin"
FRACTIONS = (0.05, 0.50, 0.95)


def read_prefix(path, pos):
    left = pos
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)


def build_file(files, target, out):
    data = b"".join(p.read_bytes() for p in files)
    written = 0
    with open(out, "wb") as fh:
        while written < target:
            fh.write(data)
            written += len(data)
    return written


def mb_s(nbytes, seconds):
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def main(argv):
    gdir = gcode_dir(argv)
    target = int(float(os.environ.get("SIZE_MB", "100")) * 1e6)
    repeats = int(os.environ.get("REPEATS", "5"))
    files = sorted(gdir.glob("*.gcode"))
    if not files:
        print(f"no .gcode files in {gdir}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.gcode"
        small = Path(tmp) / "small.gcode"
        size = build_file(files, target, big)
        small_size = build_file(files, target // 10, small)
        index = Path(tmp) / "big.idx"
        small_index = Path(tmp) / "small.idx"

        build_s, info = best_of(lambda: fastscan.build_index(big, FLAVOUR, index), 1)
        fastscan.build_index(small, FLAVOUR, small_index)

        rows = []
        for frac in FRACTIONS:
            pos = int(size * frac)
            read_s, _ = best_of(lambda pos=pos: read_prefix(big, pos), repeats)
            line_s, want = best_of(lambda pos=pos: replay_file(big, pos, FLAVOUR).state, 1)
            plain_s, plain = best_of(lambda pos=pos: fastscan.scan(big, pos, FLAVOUR), 1)
            idx_s, fast = best_of(lambda pos=pos: fastscan.scan(big, pos, FLAVOUR, index=index), repeats)
            assert plain.state == want and fast.state == want, f"state differs at {pos}"
            assert fast.checkpoint > 0, fast.index_reason
            rows.append((frac, pos, read_s, line_s, plain_s, idx_s, fast))

        pos95 = int(size * 0.95)
        # The floor of any exact shortcut over raw bytes: retracted, max_z and a relative-E print's E
        # offset depend on every E (and Z) word of the prefix, in the tracker's order. Finding and
        # converting just the E words, with no tracker logic at all:
        e_words = re.compile(rb"[ \t]E(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+))")

        def e_floor():
            count = 0
            with open(big, "rb") as fh:
                left = pos95
                while left > 0:
                    chunk = fh.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                    count += len(list(map(float, e_words.findall(chunk))))
            return count

        floor_s, e_count = best_of(e_floor, 1)
        mem_lookup_big = peak_memory(lambda: fastscan.scan(big, pos95, FLAVOUR, index=index))
        mem_lookup_small = peak_memory(
            lambda: fastscan.scan(small, int(small_size * 0.95), FLAVOUR, index=small_index)
        )
        mem_build_small = peak_memory(lambda: fastscan.build_index(small, FLAVOUR, Path(tmp) / "m1.idx"))
        half = Path(tmp) / "half.gcode"
        half_size = build_file(files, target // 5, half)
        mem_build_half = peak_memory(lambda: fastscan.build_index(half, FLAVOUR, Path(tmp) / "m2.idx"))
        index_size = index.stat().st_size

    print(f"File: {size / 1e6:.1f} MB ({len(files)} corpus files concatenated), flavour {FLAVOUR}, "
          f"best of {repeats} (the per-line runs and the index build: one run)")  # fmt: skip
    print()
    print("| position | prefix | read the prefix | per-line tracker | scan, no index | scan with index |")
    print("|---|---:|---:|---:|---:|---:|")
    for frac, pos, read_s, line_s, plain_s, idx_s, _ in rows:
        print(
            f"| {frac:.0%} | {pos / 1e6:.1f} MB | {read_s * 1e3:.1f} ms, {mb_s(pos, read_s):.0f} MB/s "
            f"| {line_s:.2f} s, {mb_s(pos, line_s):.1f} MB/s | {plain_s:.2f} s, {mb_s(pos, plain_s):.1f} MB/s "
            f"| {idx_s * 1e3:.1f} ms, {mb_s(pos, idx_s):.0f} MB/s |"
        )
    print()
    print(
        f"Index build (once per file and flavour, when the print starts): {build_s:.1f} s for the whole file, "
        f"{mb_s(size, build_s):.1f} MB/s, {info.checkpoints} checkpoints every "
        f"{fastscan.CHECKPOINT_EVERY // 1024} KiB, index {index_size / 1e6:.2f} MB "
        f"({index_size / size:.2%} of the file)."
    )
    print(
        f"Floor of an exact byte-level shortcut at 95 %: finding and converting the {e_count / 1e6:.1f} "
        f"million E words alone takes {floor_s:.2f} s ({mb_s(pos95, floor_s):.0f} MB/s), before any "
        "tracker logic."
    )
    print(
        f"Peak Python memory: lookup at 95 % {mem_lookup_big / 1e6:.2f} MB ({size / 1e6:.0f} MB file) vs "
        f"{mem_lookup_small / 1e6:.2f} MB ({small_size / 1e6:.0f} MB file); index build "
        f"{mem_build_half / 1e6:.2f} MB ({half_size / 1e6:.0f} MB file) vs {mem_build_small / 1e6:.2f} MB "
        f"({small_size / 1e6:.0f} MB file)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
