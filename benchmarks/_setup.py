"""What every benchmark needs: the repo on sys.path and the repository's corpus (tests/corpus.py)."""

import os
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpus import GCODE_DIR, flavour_for  # noqa: E402


def gcode_dir(argv) -> Path:
    """The corpus folder: the first argument, else SAFEPAUSE_GCODE_DIR, else the repository's corpus."""
    return Path(argv[1] if len(argv) > 1 else os.environ.get("SAFEPAUSE_GCODE_DIR", GCODE_DIR))


def best_of(fn, repeats):
    """(best wall time of `repeats` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def peak_memory(fn):
    """Peak Python memory (bytes) while `fn` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


__all__ = ["REPO", "GCODE_DIR", "flavour_for", "gcode_dir", "best_of", "peak_memory"]
