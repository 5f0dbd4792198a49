"""The real slicer G-code that the tests, the benchmarks and the demo server print.

The files ship inside the repository, xz-compressed, in tests/gcode/ (2.6 MB instead of 15 MB) and are
unpacked on first use into tests/gcode/.unpacked/ (git-ignored), each checked against tests/gcode/SHA256SUMS.
Nothing outside the repository is read, except the folder that SAFEPAUSE_EXTRA_GCODE names explicitly
(more real files for the pure-core corpus tests, see README.md). Standard library only.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKED_DIR = REPO / "tests" / "gcode"
UNPACKED_DIR = PACKED_DIR / ".unpacked"
EXTRA_ENV = "SAFEPAUSE_EXTRA_GCODE"

# Firmware flavour of each bundled file, from tests/gcode/README.md: 03 runs on Klipper, 04 ("reprap")
# and 05 on RepRapFirmware, 11 is a Prusa MK3S (Prusa-Firmware), the rest are Marlin.
FLAVOURS_BY_PREFIX = {"03": "klipper", "04": "reprapfirmware", "05": "reprapfirmware", "11": "prusa"}


class CorpusError(RuntimeError):
    """The bundled corpus is missing or damaged: tests must fail, not skip."""


def pinned_sums() -> dict[str, str]:
    """{file name: sha256} from tests/gcode/SHA256SUMS."""
    sums_file = PACKED_DIR / "SHA256SUMS"
    if not sums_file.is_file():
        raise CorpusError(f"{sums_file} is missing: the repository's G-code corpus is incomplete")
    sums = {}
    for line in sums_file.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            sums[name.strip().lstrip("*")] = digest.strip()
    return sums


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(name: str, want: str) -> Path:
    target = UNPACKED_DIR / name
    if target.is_file() and target.stat().st_size and _sha256(target) == want:
        return target
    packed = PACKED_DIR / f"{name}.xz"
    if not packed.is_file():
        raise CorpusError(f"{packed} is missing: the repository's G-code corpus is incomplete")
    UNPACKED_DIR.mkdir(parents=True, exist_ok=True)
    # Unpacked beside the target and renamed: a test run and the demo may unpack at the same time.
    fd, tmp = tempfile.mkstemp(dir=UNPACKED_DIR, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(packed) as source:
            while block := source.read(1 << 20):
                out.write(block)
        if _sha256(Path(tmp)) != want:
            raise CorpusError(f"{packed} does not unpack to the file pinned in SHA256SUMS")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def gcode_files() -> list[Path]:
    """Every bundled file, unpacked and verified, sorted by name."""
    sums = pinned_sums()
    if not sums:
        raise CorpusError("tests/gcode/SHA256SUMS names no file")
    return [_unpack(name, sums[name]) for name in sorted(sums)]


def gcode_dir() -> Path:
    """The folder of the unpacked, verified bundled files."""
    gcode_files()
    return UNPACKED_DIR


def extra_gcode_files() -> list[Path]:
    """The *.gcode files of the folder SAFEPAUSE_EXTRA_GCODE names; none when it is not set."""
    folder = os.environ.get(EXTRA_ENV)
    if not folder:
        return []
    files = sorted(Path(folder).glob("*.gcode"))
    if not files:
        raise CorpusError(f"{EXTRA_ENV}={folder} names no folder with .gcode files")
    return files


# What slicers write about the firmware: PrusaSlicer `; gcode_flavor = marlin2` (at the end of the
# file), CuraEngine `;FLAVOR:Marlin` (at the start).
_FLAVOUR_NOTE = re.compile(rb"^;\s*(?:gcode_flavor\s*=|FLAVOR:)\s*(\S+)", re.MULTILINE | re.IGNORECASE)
_SLICER_FLAVOURS = {"klipper": "klipper", "reprap": "reprapfirmware", "reprapfirmware": "reprapfirmware"}
_PRUSA_PRINTER = re.compile(rb"^;\s*printer_model\s*=\s*MK", re.MULTILINE)


def flavour_for(path) -> str:
    """The firmware flavour of a corpus file: the table for bundled names, else what the slicer wrote."""
    path = Path(path)
    if path.name[2:3] == "_" and path.name in pinned_sums():
        return FLAVOURS_BY_PREFIX.get(path.name[:2], "marlin")
    if not path.is_file():
        return "marlin"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(65536)
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    notes = _FLAVOUR_NOTE.findall(head) + _FLAVOUR_NOTE.findall(tail)
    if _PRUSA_PRINTER.search(tail):
        return "prusa"
    for note in notes:
        flavour = _SLICER_FLAVOURS.get(note.decode(errors="replace").lower().strip("()"))
        if flavour:
            return flavour
    return "marlin"
