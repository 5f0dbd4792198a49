"""What every benchmark needs: the repo on sys.path and the shared corpus (tests/corpus.py's lookup)."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpus import GCODE_DIR, flavour_for  # noqa: E402


def gcode_dir(argv) -> Path:
    """The corpus folder: the first argument, else SAFEPAUSE_GCODE_DIR, else the shared corpus."""
    return Path(argv[1] if len(argv) > 1 else os.environ.get("SAFEPAUSE_GCODE_DIR", GCODE_DIR))


__all__ = ["REPO", "GCODE_DIR", "flavour_for", "gcode_dir"]
