"""scripts/corpus.py's flavour and machine of every bundled file: complete, valid for OctoPrint, and what
the slicer itself wrote into the file (`; bed_shape`, `; max_print_height`, `; nozzle_diameter`)."""

from __future__ import annotations

import copy
import logging
import re

import pytest
from octoprint.printer.profile import PrinterProfileManager

from octoprint_safepause.core.gcode import FLAVOURS
from octoprint_safepause.core.sequences import Volume

from ..corpus import GCODE_DIR, bundled, gcode_files, pinned_sums
from ..corpus import scripts_corpus as source  # scripts/corpus.py

FILES = bundled()
_NOTE = re.compile(rb"^; (bed_shape|max_print_height|nozzle_diameter) = (.*)$", re.MULTILINE)


def _slicer_notes(path) -> dict[str, str]:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 65536))  # PrusaSlicer writes its config at the end
        tail = fh.read()
    return {key.decode(): value.decode().strip() for key, value in _NOTE.findall(tail)}


def test_every_bundled_file_has_a_flavour_and_a_machine():
    assert set(FILES) == set(pinned_sums())
    assert {name[:2] for name in FILES} == set(source.BUNDLED)
    assert {machine for _, machine in source.BUNDLED.values()} == set(source.MACHINES)
    for name, (flavour, profile) in FILES.items():
        assert flavour in FLAVOURS, name
        assert profile is not None and profile["id"] in source.MACHINES, name


def test_slicer_flavour_names_are_tracker_flavours():
    assert set(source._SLICER_FLAVOURS.values()) <= set(FLAVOURS)


@pytest.mark.parametrize("name", sorted(FILES))
def test_machine_is_what_the_slicer_wrote(name):
    notes = _slicer_notes(GCODE_DIR / name)
    volume = Volume.from_profile(FILES[name][1])
    if "bed_shape" not in notes:
        # CuraEngine writes no bed: file 12 was sliced for the Ender-3 of file 02 (tests/gcode/README.md)
        assert name.startswith("12_")
        ender3 = next(profile for other, (_, profile) in FILES.items() if other.startswith("02_"))
        assert volume == Volume.from_profile(ender3)
        return
    corners = [tuple(float(v) for v in corner.split("x")) for corner in notes["bed_shape"].split(",")]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    assert (volume.x_min, volume.x_max, volume.y_min, volume.y_max) == (min(xs), max(xs), min(ys), max(ys))
    assert (volume.z_min, volume.z_max) == (0.0, float(notes["max_print_height"]))
    assert volume.extruders == len(notes["nozzle_diameter"].split(","))


def test_the_mk3s_reaches_in_front_of_its_bed():
    volume = Volume.from_profile(
        source.profile_for("11_marlin2_relE_M600_M601_pause_prusa_mk3s_0.15mm.gcode")
    )
    assert (volume.y_min, volume.y_max) == (-4.0, 210.0)


@pytest.mark.parametrize("identifier", sorted(source.MACHINES))
def test_profiles_are_complete_and_octoprint_keeps_their_volume(identifier):
    profile = source.printer_profile(identifier)
    manager = PrinterProfileManager.__new__(PrinterProfileManager)  # only its validation: no settings
    manager._logger = logging.getLogger(__name__)
    checked = manager._ensure_valid_profile(copy.deepcopy(profile))
    assert checked, f"OctoPrint refuses the profile {identifier}"
    # OctoPrint only ever widens a custom box to the bed (width x depth): a depth of 214 for the MK3S
    # would have moved its Y limit from 210 to 214.
    assert Volume.from_profile(checked) == Volume.from_profile(profile)
    assert source.printer_profile(identifier) == profile
    profile["volume"]["width"] = 1  # each call builds its own copy
    assert source.printer_profile(identifier)["volume"]["width"] != 1


def test_profile_lookups_by_file_name():
    for path in gcode_files():
        assert source.profile_id_for(path.name) == source.profile_for(path)["id"]
    assert source.profile_for("not_a_corpus_file.gcode") is None
    assert source.profile_id_for("07_renamed_by_someone.gcode") is None  # only the pinned names
