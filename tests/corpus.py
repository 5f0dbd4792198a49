"""The real slicer corpus for every test: the repository's own files (scripts/corpus.py unpacks and
verifies them; a missing or damaged file fails the run), plus SAFEPAUSE_EXTRA_GCODE's when set."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import corpus as scripts_corpus  # noqa: E402  (the module itself, for its tables)
from corpus import (  # noqa: E402
    extra_gcode_files,
    flavour_for,
    gcode_dir,
    gcode_files,
    pinned_sums,
    profile_for,
)

GCODE_DIR = gcode_dir()


def corpus_files():
    """[(path, flavour)]: every bundled file, then the extra ones (for the pure-core corpus tests)."""
    return [(path, flavour_for(path)) for path in [*gcode_files(), *extra_gcode_files()]]


def bundled():
    """{file name: (flavour, OctoPrint printer profile)} of every bundled file (scripts/corpus.py)."""
    return {path.name: (flavour_for(path), profile_for(path)) for path in gcode_files()}


__all__ = [
    "GCODE_DIR",
    "scripts_corpus",
    "bundled",
    "corpus_files",
    "flavour_for",
    "gcode_files",
    "pinned_sums",
    "profile_for",
]
