"""The real slicer G-code that the tests, the benchmarks and the demo server print.

The files ship inside the repository, xz-compressed, in tests/gcode/ (2.6 MB instead of 15 MB) and are
unpacked on first use into tests/gcode/.unpacked/ (git-ignored), each checked against tests/gcode/SHA256SUMS.
Nothing outside the repository is read, except the folder that SAFEPAUSE_EXTRA_GCODE names explicitly
(more real files for the pure-core corpus tests, see README.md). Standard library only.

What each bundled file was sliced for (firmware flavour, machine) is said here and only here: the tests,
the integration rig, the benchmarks and the demo server take flavours and OctoPrint printer profiles
from `flavour_for`, `profile_for` / `profile_id_for` and `printer_profiles`.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKED_DIR = REPO / "tests" / "gcode"
UNPACKED_DIR = PACKED_DIR / ".unpacked"
EXTRA_ENV = "SAFEPAUSE_EXTRA_GCODE"


@dataclass(frozen=True)
class Machine:
    """A printer the bundled files were sliced for: what its OctoPrint printer profile says."""

    name: str
    x: tuple[float, float]  # reachable range in machine coordinates (mm)
    y: tuple[float, float]
    height: float
    extruders: int = 1


# The machines, by printer profile id. Volumes from each file's own `; bed_shape` and
# `; max_print_height` (tests/unit/test_corpus_profiles.py checks them against the files); Cura's file 12
# writes neither and runs on the Ender-3 of file 02.
MACHINES = {
    "corpus_210x210x205": Machine("Anycubic 210x210x205 (files 01, 09)", (0, 210), (0, 210), 205),
    "corpus_ender3_220x220x250": Machine("Ender-3 220x220x250 (files 02, 12, 13)", (0, 220), (0, 220), 250),
    "corpus_voron_250x250x230": Machine("Voron 250x250x230 (file 03)", (0, 250), (0, 250), 230),
    "corpus_200x200x200": Machine("RepRap 200x200x200 (file 04)", (0, 200), (0, 200), 200),
    "corpus_toolchanger_300x300x300": Machine(
        "Tool changer 300x300x300, 2 tools (file 05)", (0, 300), (0, 300), 300, extruders=2
    ),
    "corpus_120x120x60": Machine("Small 120x120x60 (files 07, 08)", (0, 120), (0, 120), 60),
    # `; bed_shape = 0x-4,250x-4,250x210,0x210`: the MK3S reaches 4 mm in front of Y=0 (the purge line).
    "corpus_mk3s_250x210x210": Machine(
        "Prusa MK3S 250x210x210, reachable from Y=-4 (file 11)", (0, 250), (-4, 210), 210
    ),
}

# What each bundled file (by its two-digit prefix) was sliced for: firmware flavour and machine, from
# tests/gcode/README.md. 03 runs on Klipper, 04 ("reprap") and 05 on RepRapFirmware, 11 is a Prusa
# MK3S (Prusa-Firmware), the rest are Marlin.
BUNDLED = {
    "01": ("marlin", "corpus_210x210x205"),
    "02": ("marlin", "corpus_ender3_220x220x250"),
    "03": ("klipper", "corpus_voron_250x250x230"),
    "04": ("reprapfirmware", "corpus_200x200x200"),
    "05": ("reprapfirmware", "corpus_toolchanger_300x300x300"),
    "07": ("marlin", "corpus_120x120x60"),
    "08": ("marlin", "corpus_120x120x60"),
    "09": ("marlin", "corpus_210x210x205"),
    "11": ("prusa", "corpus_mk3s_250x210x210"),
    "12": ("marlin", "corpus_ender3_220x220x250"),
    "13": ("marlin", "corpus_ender3_220x220x250"),
}

# OctoPrint 1.11's PrinterProfileManager.default: a profile file must carry every key.
_PROFILE_BASE = {
    "color": "default",
    "heatedBed": True,
    "heatedChamber": False,
    "axes": {
        "x": {"speed": 6000, "inverted": False},
        "y": {"speed": 6000, "inverted": False},
        "z": {"speed": 200, "inverted": False},
        "e": {"speed": 300, "inverted": False},
    },
}


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


def _bundled(path) -> tuple[str, str] | None:
    """(flavour, machine id) of a bundled file's name, else None."""
    name = Path(path).name
    if name[2:3] != "_" or name not in pinned_sums():
        return None
    if name[:2] not in BUNDLED:
        raise CorpusError(f"{name} is bundled but not in scripts/corpus.py's BUNDLED table")
    return BUNDLED[name[:2]]


def printer_profile(identifier: str) -> dict:
    """The complete OctoPrint printer profile of one of MACHINES."""
    machine = MACHINES[identifier]
    (x_min, x_max), (y_min, y_max) = machine.x, machine.y
    # OctoPrint's bed runs from the lower-left origin to width x depth; reach beyond it (in front of
    # Y=0, say) only a custom box can say. The bed must end at the box's far edges: OctoPrint widens a
    # custom box to the bed (a depth of 214 for the MK3S made its box end at Y=214, not 210).
    box = {
        "x_min": x_min,
        "x_max": x_max,
        "y_min": y_min,
        "y_max": y_max,
        "z_min": 0,
        "z_max": machine.height,
    }
    plain = x_min == 0 and y_min == 0
    return {
        **json.loads(json.dumps(_PROFILE_BASE)),  # a deep copy: callers may change theirs
        "id": identifier,
        "name": machine.name,
        "model": machine.name,
        "volume": {
            "width": x_max,
            "depth": y_max,
            "height": machine.height,
            "formFactor": "rectangular",
            "origin": "lowerleft",
            "custom_box": False if plain else box,
        },
        "extruder": {
            "count": machine.extruders,
            "offsets": [[0.0, 0.0] for _ in range(machine.extruders)],
            "nozzleDiameter": 0.4,
            "sharedNozzle": False,
            "defaultExtrusionLength": 5,
        },
    }


def printer_profiles() -> dict[str, dict]:
    """Every machine's complete OctoPrint printer profile, by id (for the demo server and the rig)."""
    return {identifier: printer_profile(identifier) for identifier in MACHINES}


def profile_id_for(path) -> str | None:
    """The printer profile id of a bundled file ("07_marlin2_..." -> "corpus_120x120x60"), else None."""
    bundled = _bundled(path)
    return bundled[1] if bundled else None


def profile_for(path) -> dict | None:
    """The OctoPrint printer profile of a bundled file, else None."""
    identifier = profile_id_for(path)
    return printer_profile(identifier) if identifier else None


def flavour_for(path) -> str:
    """The firmware flavour of a corpus file: the table for bundled names, else what the slicer wrote."""
    path = Path(path)
    bundled = _bundled(path)
    if bundled:
        return bundled[0]
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
