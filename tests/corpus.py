"""Where the shared real-slicer corpus lies (one lookup for every test; see scripts/sandbox.py)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sandbox import SHARED  # noqa: E402

GCODE_DIR = SHARED / "gcode"


def gcode_files():
    files = sorted(GCODE_DIR.glob("*.gcode"))
    if not files:
        raise FileNotFoundError(f"the shared gcode corpus is missing: {GCODE_DIR} (set SAFEPAUSE_SHARED)")
    return files
