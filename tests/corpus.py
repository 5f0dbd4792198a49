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

# Firmware flavour of each shared file, from gcode/README.md: 03 runs on Klipper, 04 ("reprap") and
# 05 on RepRapFirmware, 11 is a Prusa MK3S (Prusa-Firmware), the rest are Marlin.
FLAVOURS_BY_PREFIX = {"03": "klipper", "04": "reprapfirmware", "05": "reprapfirmware", "11": "prusa"}


def flavour_for(name: str) -> str:
    """The flavour of a shared file, by its two-digit prefix."""
    return FLAVOURS_BY_PREFIX.get(Path(name).name[:2], "marlin")
