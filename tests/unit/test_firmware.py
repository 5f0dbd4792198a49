from octoprint_safepause.core.firmware import _NAME_HINTS, choose_flavour, flavour_from_firmware_name
from octoprint_safepause.core.gcode import FLAVOURS


def test_names_reported_by_real_firmwares():
    assert flavour_from_firmware_name("Marlin 2.1.2.1 (Jul  5 2023 12:00:00)") == "marlin"
    assert flavour_from_firmware_name("Prusa-Firmware 3.13.2 based on Marlin") == "prusa"
    assert flavour_from_firmware_name("Klipper") == "klipper"
    assert flavour_from_firmware_name("RepRapFirmware for Duet 3 MB6HC") == "reprapfirmware"
    assert flavour_from_firmware_name("") is None
    assert flavour_from_firmware_name(None) is None


def test_setting_wins_unless_auto():
    assert choose_flavour("klipper", "marlin") == "klipper"
    assert choose_flavour("auto", "prusa") == "prusa"
    assert choose_flavour("auto", None) == "marlin"


def test_always_a_tracker_flavour():
    # the one list of flavours is gcode.FLAVOURS: a stale or unknown value never leaves this module
    assert choose_flavour("marlin1", None) == "marlin"
    assert choose_flavour(None, "klipper") == "klipper"
    assert choose_flavour("bogus", "smoothie") == "marlin"
    for flavour in FLAVOURS:
        assert choose_flavour(flavour, None) == flavour
        assert choose_flavour("auto", flavour) == flavour
    assert {flavour for _, flavour in _NAME_HINTS} == set(FLAVOURS)  # every flavour can be detected
