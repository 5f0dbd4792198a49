"""Per-line agreement of the tracker with independent models over every corpus file.

1. ``independent_model.KlipperStyleModel`` (see its docstring for why it is independent: Klipper's
   base/last/homing vector arithmetic and tokeniser, firmware differences as data): X/Y/Z/E and F are
   compared after every line of every file; the motion modes, units, tool, slicer retraction and the
   highest deposited Z after every line that is not a plain move, and at the end of each file.
2. OctoPrint's own analyser (``octoprint.util.gcodeInterpreter``, a third implementation that nobody on
   this project wrote): the highest Z of its printing area must equal the tracker's ``max_z``. It is
   slow (~20 us a line), so it runs on the smallest file of each flavour; its G92/relative-E quirks do
   not affect that total there.
"""

from __future__ import annotations

import hashlib
import math

import pytest

from octoprint_safepause.core.gcode import StateTracker

from ..corpus import pinned_sums
from .independent_model import GCODE_DIR, KlipperStyleModel, corpus_files, read_lines

FILES = corpus_files()

TOL = 1e-6


def _close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=TOL)


def test_corpus_is_the_pinned_one():
    sums = pinned_sums()
    bundled = [path for path, _ in FILES if path.parent == GCODE_DIR]
    assert sorted(p.name for p in bundled) == sorted(sums)
    for path in bundled:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[path.name], path.name


@pytest.mark.parametrize("path,flavour", FILES, ids=[p.name[:2] for p, _ in FILES])
def test_every_line_agrees_with_the_klipper_style_model(path, flavour):
    tracker = StateTracker(flavour)
    model = KlipperStyleModel(flavour)
    feed, mfeed, position = tracker.feed, model.feed, tracker.position
    for n, line in enumerate(read_lines(path), 1):
        feed(line)
        mfeed(line)
        got = position()
        want = model.position()
        if not all(_close(a, b) for a, b in zip(got, want)):
            pytest.fail(f"{path.name}:{n} {line.strip()!r}: tracker {got} != model {want}")
        if line[:3] in ("G1 ", "G0 ") and n % 97:
            continue
        s = tracker.state
        checks = {
            "f": (s.f, None if model.speed != model.speed else model.speed),
            "relative_xyz": (s.relative_xyz, model.coord_rel),
            "relative_e": (s.relative_e, model.e_relative()),
            "units": (s.units, "inch" if model.inch else "mm"),
            "tool": (s.tool, model.tool),
        }
        for name, (a, b) in checks.items():
            assert a == b, f"{path.name}:{n} {line.strip()!r}: {name} {a!r} != {b!r}"
        for name, a, b in (
            ("retracted", s.retracted, model.retracted()),
            ("max_z", s.max_z, model.max_z()),
        ):
            assert _close(a, b), f"{path.name}:{n} {line.strip()!r}: {name} {a!r} != {b!r}"
    assert tracker.lines == n
    assert tracker.state.max_z is not None


def _smallest_per_flavour():
    best = {}
    for path, flavour in FILES:
        if flavour not in best or path.stat().st_size < best[flavour].stat().st_size:
            best[flavour] = path
    return [(p, f) for f, p in sorted(best.items())]


@pytest.mark.parametrize("path,flavour", _smallest_per_flavour(), ids=lambda v: getattr(v, "name", v)[:2])
def test_max_z_agrees_with_octoprints_analyser(path, flavour):
    from octoprint.util.gcodeInterpreter import gcode

    analyser = gcode()
    analyser._load(read_lines(path), g90_extruder=flavour == "marlin")
    tracker = StateTracker(flavour)
    tracker.feed_many(read_lines(path))
    assert tracker.state.max_z == pytest.approx(analyser._print_minMax.max.z, abs=1e-6)
