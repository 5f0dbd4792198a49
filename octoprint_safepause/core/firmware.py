"""Which G-code flavour the tracker should assume, from the setting or the firmware's M115 name."""

from __future__ import annotations

from .gcode.state import FLAVOURS, KLIPPER, MARLIN, PRUSA, RRF

# Checked in order: Prusa's firmware names itself "Prusa-Firmware" and is Marlin-based.
_NAME_HINTS = (
    ("prusa", PRUSA),
    ("klipper", KLIPPER),
    ("reprapfirmware", RRF),
    ("duet", RRF),
    ("marlin", MARLIN),
)


def flavour_from_firmware_name(name: str | None) -> str | None:
    lowered = (name or "").lower()
    for hint, flavour in _NAME_HINTS:
        if hint in lowered:
            return flavour
    return None


def choose_flavour(setting: str | None, detected: str | None) -> str:
    """The setting when it names a flavour; otherwise ("auto", or a value no flavour has) the detected
    one, and without that Marlin 2. Always one of gcode.FLAVOURS."""
    if setting in FLAVOURS:
        return setting
    return detected if detected in FLAVOURS else MARLIN
