"""The one schema of every setting, and its validation: motion, long holds, templates, the firmware,
the hold timeout, the native pause switch, recovery.

`validate(values, profile)` turns what the settings form, `POST /api/settings` or config.yaml holds into
clean, typed values and a message per refused field; `to_motion_settings(clean)` builds the
MotionSettings that sequences.py takes. Bounds that depend on the printer (park position, lift, top
margin) are checked against the OctoPrint printer profile. A new setting is one Field here: defaults,
validation, the stored type and the settings form all come from it. Pure: no OctoPrint import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from . import templates_gcode
from .filament import ChangeSettings
from .gcode import FLAVOURS
from .sequences import MotionSettings, Volume


@dataclass(frozen=True)
class Field:
    name: str
    kind: type  # float, bool or str (with `choices`: one of them)
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    label: str = ""
    help: str = ""
    nullable: bool = False  # None is a valid value (park_x/park_y: None = automatic)
    above: bool = False  # minimum is exclusive (speeds)
    choices: tuple = ()  # the only values a str field may take


SCHEMA: tuple[Field, ...] = (
    Field(
        "firmware",
        str,
        "auto",
        label="Firmware",
        help="how the firmware reads G-code (modes, temperatures, idle timeouts); auto = from its name",
        choices=("auto", *FLAVOURS),
    ),
    Field(
        "hold_timeout",
        float,
        2.0,
        0.1,
        60,
        "s",
        "Hold timeout",
        "how long a pause waits for the next line of the file (long heat-ups, dwells) before holding without it",
    ),
    Field(
        "take_over_pause",
        bool,
        True,
        label="Every pause is a safe pause",
        help="OctoPrint's Pause button and /api/job, other plugins, the printer's //action:pause and the "
        "file's M0/M1/M25/@pause pause with SafePause; off: only SafePause's own buttons, API and helpers",
    ),
    Field(
        "run_octoprint_scripts",
        bool,
        True,
        label="Run OctoPrint's pause scripts",
        help="afterPrintPaused after the park, beforePrintResumed before the return, checked like the "
        "templates; pause_position is empty there, as SafePause parks",
    ),
    Field("retract_length", float, 2.0, 0, 20, "mm", "Retract", "filament pulled back at pause; 0 = none"),
    Field("retract_speed", float, 35.0, 0, 150, "mm/s", "Retract speed", above=True),
    Field("lift", float, 5.0, 0, 500, "mm", "Lift", "at least this far up from the nozzle's Z"),
    Field(
        "clearance",
        float,
        2.0,
        0,
        50,
        "mm",
        "Clearance",
        "above the highest printed point before any XY travel",
    ),
    Field("park_enabled", bool, True, label="Park", help="travel to the park position, else lift only"),
    Field(
        "park_x", float, None, unit="mm", label="Park X", help="machine X; empty = automatic", nullable=True
    ),
    Field(
        "park_y", float, None, unit="mm", label="Park Y", help="machine Y; empty = automatic", nullable=True
    ),
    Field("travel_speed", float, 100.0, 0, 1000, "mm/s", "XY travel speed", above=True),
    Field("z_speed", float, 10.0, 0, 100, "mm/s", "Z speed", above=True),
    Field("prime_extra", float, 0.0, 0, 50, "mm", "Prime", "pushed at the park position on resume; 0 = none"),
    Field("prime_speed", float, 5.0, 0, 50, "mm/s", "Prime speed", above=True),
    Field("min_extrude_temp", float, 170.0, 0, 400, "°C", "Minimum extrusion temperature"),
    Field("top_margin", float, 0.0, 0, 500, "mm", "Top margin", "kept free below the top of the volume"),
    Field("fans_off", bool, True, label="Part fan off while paused"),
    Field("keep_steppers", bool, True, label="Keep motors on while paused"),
    Field(
        "hold_backstop",
        float,
        24.0,
        1,
        168,
        "h",
        "Firmware backstop",
        "the firmware's own idle timeout during a hold, in case OctoPrint dies",
    ),
    Field(
        "idle_timeout_restore",
        float,
        0.0,
        0,
        86400,
        "s",
        "Idle timeout after resume",
        "0 = the firmware's stock value (Marlin 120, Prusa 60, Klipper 600, RepRapFirmware 30)",
    ),
    Field("hotend_off_after", float, 15.0, 0, 1440, "min", "Hotend off after", "0 = never"),
    Field("bed_off_after", float, 0.0, 0, 1440, "min", "Bed off after", "0 = never: keeps the part stuck"),
    Field(
        "filament_change",
        str,
        "host",
        label="Filament change (M600)",
        help="host: SafePause parks, unloads, waits for you, loads and purges, and the file's M600 is never "
        "sent (over USB the firmware's own blocks the serial line; many stock firmwares ignore it); "
        "firmware: M600 goes to the printer",
        choices=("host", "firmware"),
    ),
    Field(
        "change_x", float, None, unit="mm", label="Change X", help="machine X; empty = the middle", nullable=True
    ),
    Field(
        "change_y", float, None, unit="mm", label="Change Y", help="machine Y; empty = the front", nullable=True
    ),
    Field(
        "change_unload_length",
        float,
        100.0,
        0,
        1500,
        "mm",
        "Unload length",
        "pulled back in all: past the extruder gears (a Bowden tube: its length)",
    ),
    Field("change_unload_speed", float, 40.0, 0, 150, "mm/s", "Unload speed", above=True),
    Field("change_load_length", float, 90.0, 0, 1500, "mm", "Load length", "pushed in before purging"),
    Field("change_load_speed", float, 6.0, 0, 100, "mm/s", "Load speed", above=True),
    Field(
        "change_purge_length",
        float,
        30.0,
        0,
        500,
        "mm",
        "Purge length",
        "extruded at the change position, and again for each Purge more",
    ),
    Field("change_purge_speed", float, 3.0, 0, 50, "mm/s", "Purge speed", above=True),
    Field(
        "change_hotend_off_after",
        float,
        30.0,
        0,
        1440,
        "min",
        "Hotend off during a change after",
        "0 = never; loading and purging heat up and wait first",
    ),
    Field("pause_template", str, "", label="Pause G-code", help="Jinja2, sent after parking"),
    Field("resume_template", str, "", label="Resume G-code", help="Jinja2, sent at the park position"),
    Field(
        "recovery_home_axes",
        str,
        "XY",
        label="Axes homed after a power loss",
        help="X and Y only: homing Z would drive the nozzle into the part",
        choices=("XY",),
    ),
    Field(
        "recovery_prime_length",
        float,
        3.0,
        0,
        50,
        "mm",
        "Recovery prime",
        "pushed where the printer heats before a recovered print goes on",
    ),
    Field("recovery_park", bool, True, label="Heat at the park position when recovering"),
)
FIELDS: dict[str, Field] = {f.name: f for f in SCHEMA}


def defaults() -> dict:
    """The settings defaults, e.g. for SettingsPlugin.get_settings_defaults()."""
    return {f.name: f.default for f in SCHEMA}


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _coerce(spec: Field, value: Any) -> Any:
    """The typed value, or raises ValueError with the message shown to the user."""
    if value is None or (isinstance(value, str) and not value.strip() and spec.kind is not str):
        if spec.nullable:
            return None
        raise ValueError("a value is required")
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "1",
            "0",
        ):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise ValueError(f"must be true or false, not {value!r}")
    if spec.kind is str:
        if not isinstance(value, str):
            raise ValueError("must be text")
        if spec.choices and value.strip() not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}, not {value!r}")
        return value.strip() if spec.choices else value
    if isinstance(value, bool):  # bool is an int: True must not become 1 mm
        raise ValueError(f"must be a number, not {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.minimum is not None:
        if spec.above and number <= spec.minimum:
            raise ValueError(f"must be more than {_number(spec.minimum)}{unit} (got {_number(number)})")
        if not spec.above and number < spec.minimum:
            raise ValueError(f"must be at least {_number(spec.minimum)}{unit} (got {_number(number)})")
    if spec.maximum is not None and number > spec.maximum:
        raise ValueError(f"must be at most {_number(spec.maximum)}{unit} (got {_number(number)})")
    return number


def validate(values: Mapping[str, Any] | None, profile: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """(clean, errors): every schema field typed and checked, and a message per refused field.

    Missing fields take their default; a refused field also falls back to its default in `clean`, so
    `clean` is always usable, but a form should not be saved while `errors` is non-empty. Keys outside
    the schema are ignored.
    """
    values = values or {}
    clean: dict = {}
    errors: dict = {}
    for spec in SCHEMA:
        if spec.name not in values:
            clean[spec.name] = spec.default
            continue
        try:
            clean[spec.name] = _coerce(spec, values[spec.name])
        except ValueError as error:
            errors[spec.name] = f"{spec.label or spec.name}: {error}"
            clean[spec.name] = spec.default

    volume = Volume.from_profile(dict(profile or {}))
    height = volume.z_max - volume.z_min
    if "lift" not in errors and clean["lift"] > height:
        errors["lift"] = (
            f"Lift: {_number(clean['lift'])} mm is more than the printer's height ({_number(height)} mm)"
        )
        clean["lift"] = FIELDS["lift"].default
    if "top_margin" not in errors and clean["top_margin"] >= height:
        errors["top_margin"] = (
            f"Top margin: {_number(clean['top_margin'])} mm leaves no room in a {_number(height)} mm high volume"
        )
        clean["top_margin"] = FIELDS["top_margin"].default

    _check_park(clean, errors, volume)
    _check_park(clean, errors, volume, "change_x", "change_y", "Change")

    backstop_min = clean["hold_backstop"] * 60
    for name in ("hotend_off_after", "bed_off_after", "change_hotend_off_after"):
        if name not in errors and "hold_backstop" not in errors and clean[name] >= backstop_min:
            errors[name] = (
                f"{FIELDS[name].label}: {_number(clean[name])} min is not before the firmware backstop "
                f"({_number(clean['hold_backstop'])} h), which would switch the heaters off first"
            )
            clean[name] = FIELDS[name].default

    for name in ("pause_template", "resume_template"):
        if name in errors:
            continue
        message = templates_gcode.check(clean[name], FIELDS[name].label)
        if message:
            errors[name] = message
            clean[name] = FIELDS[name].default
    return clean, errors


def _check_park(clean: dict, errors: dict, volume: Volume, x_key="park_x", y_key="park_y", name="Park") -> None:
    """A machine XY point of the settings (park, change position) inside the bed; refused: None."""
    x, y = clean[x_key], clean[y_key]
    if x_key in errors or y_key in errors:
        return
    if x is not None and not volume.x_min - 1e-9 <= x <= volume.x_max + 1e-9:
        errors[x_key] = (
            f"{name} X: {_number(x)} mm is outside the bed (X from {_number(volume.x_min)} to {_number(volume.x_max)} mm)"
        )
        clean[x_key] = None
    if y is not None and not volume.y_min - 1e-9 <= y <= volume.y_max + 1e-9:
        errors[y_key] = (
            f"{name} Y: {_number(y)} mm is outside the bed (Y from {_number(volume.y_min)} to {_number(volume.y_max)} mm)"
        )
        clean[y_key] = None
    x, y = clean[x_key], clean[y_key]
    if volume.circular and x is not None and y is not None and not volume.contains(x, y):
        errors[x_key] = (
            f"{name}: X{_number(x)} Y{_number(y)} is outside the round bed (radius {_number(volume.radius)} mm "
            "around X0 Y0)"
        )
        clean[x_key] = clean[y_key] = None


def to_settings_schema(clean: Mapping[str, Any]) -> MotionSettings:
    """MotionSettings from validated values: park_enabled/park_x/park_y become `park`."""
    known = {f.name for f in fields(MotionSettings)}
    kwargs = {k: v for k, v in clean.items() if k in known and k != "park"}
    if not clean.get("park_enabled", FIELDS["park_enabled"].default):
        kwargs["park"] = None
    elif clean.get("park_x") is None or clean.get("park_y") is None:
        kwargs["park"] = "auto"
    else:
        kwargs["park"] = (float(clean["park_x"]), float(clean["park_y"]))
    return MotionSettings(**kwargs)


def motion_kwargs(values: Mapping[str, Any] | None, profile: Mapping[str, Any] | None) -> dict:
    """Keyword arguments for MotionSettings(**...) from raw settings: validated, defaults for refusals."""
    clean, _errors = validate(values, profile)
    settings = to_settings_schema(clean)
    return {f.name: getattr(settings, f.name) for f in fields(MotionSettings)}


def change_settings(values: Mapping[str, Any] | None, profile: Mapping[str, Any] | None) -> ChangeSettings:
    """ChangeSettings from raw settings: validated, defaults for refusals."""
    clean, _errors = validate(values, profile)
    return ChangeSettings(
        unload_length=clean["change_unload_length"],
        unload_speed=clean["change_unload_speed"],
        load_length=clean["change_load_length"],
        load_speed=clean["change_load_speed"],
        purge_length=clean["change_purge_length"],
        purge_speed=clean["change_purge_speed"],
        hotend_off_after=clean["change_hotend_off_after"],
        x=clean["change_x"],
        y=clean["change_y"],
    )

