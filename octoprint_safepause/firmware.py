"""Which G-code flavour the tracker should assume, from the setting or the firmware's M115 name."""

from __future__ import annotations

# Checked in order: Prusa's firmware names itself "Prusa-Firmware" and is Marlin-based.
_NAME_HINTS = (
    ("prusa", "prusa"),
    ("klipper", "klipper"),
    ("reprapfirmware", "reprapfirmware"),
    ("duet", "reprapfirmware"),
    ("marlin", "marlin"),
)


def flavour_from_firmware_name(name: str | None) -> str | None:
    lowered = (name or "").lower()
    for hint, flavour in _NAME_HINTS:
        if hint in lowered:
            return flavour
    return None


def choose_flavour(setting: str | None, detected: str | None) -> str:
    """The setting wins unless it is "auto"; auto without a detected firmware falls back to Marlin 2."""
    if setting and setting != "auto":
        return setting
    return detected or "marlin"
