"""Settings schema and validation: types, bounds, printer-dependent checks, clear messages."""

from __future__ import annotations

from dataclasses import fields

import pytest

from octoprint_safepause.core.sequences import MotionSettings
from octoprint_safepause.core.settings_schema import (
    FIELDS,
    SCHEMA,
    defaults,
    motion_kwargs,
    to_settings_schema,
    validate,
)

ENDER = {
    "volume": {"width": 220, "depth": 220, "height": 250, "origin": "lowerleft", "formFactor": "rectangular"}
}
DELTA = {"volume": {"width": 180, "depth": 180, "height": 300, "origin": "center", "formFactor": "circular"}}


def test_schema_defaults_match_settings_schema():
    for spec in SCHEMA:
        assert spec.label, spec.name
        if spec.name in MotionSettings.__dataclass_fields__:
            assert getattr(MotionSettings(), spec.name) == spec.default, spec.name
    clean, errors = validate({}, ENDER)
    assert errors == {} and clean == defaults()
    # every MotionSettings field except the derived `park` is configurable
    assert {f.name for f in fields(MotionSettings)} - set(FIELDS) == {"park"}


def test_negative_lift_is_refused_with_a_clear_message():
    clean, errors = validate({"lift": -1}, ENDER)
    assert errors == {"lift": "Lift: must be at least 0 mm (got -1)"}
    assert clean["lift"] == FIELDS["lift"].default


def test_park_outside_the_bed_is_refused():
    clean, errors = validate({"park_x": 250, "park_y": -5}, ENDER)
    assert errors["park_x"] == "Park X: 250 mm is outside the bed (X from 0 to 220 mm)"
    assert errors["park_y"] == "Park Y: -5 mm is outside the bed (Y from 0 to 220 mm)"
    assert clean["park_x"] is None and clean["park_y"] is None
    assert validate({"park_x": 0, "park_y": 220}, ENDER)[1] == {}


def test_park_outside_a_round_bed_is_refused():
    _clean, errors = validate({"park_x": 80, "park_y": 80}, DELTA)
    assert errors == {"park_x": "Park: X80 Y80 is outside the round bed (radius 90 mm around X0 Y0)"}
    assert validate({"park_x": 0, "park_y": -85}, DELTA)[1] == {}


def test_custom_box_extends_the_bed():
    prusa = {"volume": {"width": 250, "depth": 210, "height": 210, "custom_box": {"y_min": -4}}}
    assert validate({"park_x": 0, "park_y": -3}, prusa)[1] == {}


def test_types_are_coerced_and_junk_refused():
    clean, errors = validate(
        {"lift": "7.5", "fans_off": "false", "keep_steppers": 1, "park_x": "", "retract_speed": 0}, ENDER
    )
    assert clean["lift"] == 7.5 and clean["fans_off"] is False and clean["keep_steppers"] is True
    assert clean["park_x"] is None
    assert errors == {"retract_speed": "Retract speed: must be more than 0 mm/s (got 0)"}
    _clean, errors = validate(
        {"lift": "high", "clearance": float("nan"), "z_speed": True, "fans_off": "maybe"}, ENDER
    )
    assert errors["lift"] == "Lift: must be a number, not 'high'"
    assert errors["clearance"] == "Clearance: must be a finite number"
    assert errors["z_speed"] == "Z speed: must be a number, not True"
    assert errors["fans_off"] == "Part fan off while paused: must be true or false, not 'maybe'"
    _clean, errors = validate({"lift": None, "pause_template": 5}, ENDER)
    assert errors == {"lift": "Lift: a value is required", "pause_template": "Pause G-code: must be text"}


def test_printer_dependent_bounds():
    _clean, errors = validate({"lift": 300, "top_margin": 250}, ENDER)
    assert errors["lift"] == "Lift: 300 mm is more than the printer's height (250 mm)"
    assert errors["top_margin"] == "Top margin: 250 mm leaves no room in a 250 mm high volume"
    _clean, errors = validate({"retract_length": 25, "hold_backstop": 0.5}, ENDER)
    assert errors["retract_length"] == "Retract: must be at most 20 mm (got 25)"
    assert errors["hold_backstop"] == "Firmware backstop: must be at least 1 h (got 0.5)"


def test_heater_timeouts_must_come_before_the_firmware_backstop():
    _clean, errors = validate({"hold_backstop": 1, "hotend_off_after": 60, "bed_off_after": 30}, ENDER)
    assert list(errors) == ["hotend_off_after"]
    assert "not before the firmware backstop (1 h)" in errors["hotend_off_after"]


def test_templates_are_compiled_with_their_line():
    _clean, errors = validate({"pause_template": "G1 X1\n{% if %}\n"}, ENDER)
    assert errors["pause_template"].startswith("Pause G-code, line 2: ")
    assert validate({"resume_template": "G1 Z{{ plan.safe_z }}"}, ENDER)[1] == {}


def test_unknown_keys_are_ignored():
    clean, errors = validate({"no_such_setting": "klipper", "hold_timeout": 2}, ENDER)
    assert errors == {} and "no_such_setting" not in clean


@pytest.mark.parametrize(
    ("values", "park"),
    [
        ({}, "auto"),
        ({"park_x": 10, "park_y": 200}, (10.0, 200.0)),
        ({"park_x": 10}, "auto"),
        ({"park_enabled": False, "park_x": 10, "park_y": 20}, None),
    ],
)
def test_to_settings_schema_park(values, park):
    clean, _errors = validate(values, ENDER)
    assert to_settings_schema(clean).park == park


def test_motion_kwargs_feed_settings_schema():
    kwargs = motion_kwargs({"lift": "3", "park_x": 500, "park_y": 10, "junk": 1}, ENDER)
    settings = MotionSettings(**kwargs)
    assert settings.lift == 3.0 and settings.park == "auto"  # the refused park falls back to automatic


def test_every_setting_is_in_the_schema_and_checked():
    """Settings once checked by hand or not at all: one schema validates, coerces and documents them."""
    clean, errors = validate(
        {
            "firmware": "klipper",
            "hold_timeout": "5",
            "take_over_pause": "yes",
            "recovery_home_axes": "XY",
            "recovery_prime_length": "4",
            "recovery_park": "off",
        },
        ENDER,
    )
    assert errors == {}
    assert (clean["firmware"], clean["hold_timeout"], clean["take_over_pause"]) == ("klipper", 5.0, True)
    assert (clean["recovery_home_axes"], clean["recovery_prime_length"], clean["recovery_park"]) == ("XY", 4.0, False)

    clean, errors = validate(
        {
            "firmware": "smoothie",
            "hold_timeout": 0,
            "take_over_pause": "maybe",
            "recovery_home_axes": "XYZ",  # G28 Z onto the part
            "recovery_prime_length": 500,
            "recovery_park": "no way",
        },
        ENDER,
    )
    assert sorted(errors) == [
        "firmware", "hold_timeout", "recovery_home_axes", "recovery_park", "recovery_prime_length", "take_over_pause",
    ]  # fmt: skip
    assert "XYZ" in errors["recovery_home_axes"] and "smoothie" in errors["firmware"]
    # refused values fall back to the defaults, never to what was refused
    assert clean["recovery_home_axes"] == "XY" and clean["firmware"] == "auto" and clean["recovery_park"] is True
