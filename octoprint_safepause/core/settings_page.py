"""The settings page, pure: its groups and texts (marked for translation) and the G-code preview."""

from __future__ import annotations

from . import settings_schema
from .gcode import StateTracker
from .safety import check_pause, check_resume
from .sequences import MotionSettings, Volume, pause_sequence
from .templates_gcode import TemplateError, build_context, render


def N_(message):
    """Marks a message for extraction (babel's default keywords include N_); translated where shown."""
    return message


# settings_schema.SCHEMA's labels and help texts, so that babel_extract finds them; the settings
# template translates them with _(field.label). tests/unit/test_native_guard.py checks they match.
SCHEMA_TEXTS = (
    N_("Firmware"), N_("how the firmware reads G-code (modes, temperatures, idle timeouts); auto = from its name"),
    N_("Hold timeout"),
    N_("how long a pause waits for the next line of the file (long heat-ups, dwells) before holding without it"),
    N_("Every pause is a safe pause"),
    N_("OctoPrint's Pause button and /api/job, other plugins, the printer's //action:pause and the "
       "file's M0/M1/M25/@pause pause with SafePause; off: only SafePause's own buttons, API and helpers"),
    N_("Run OctoPrint's pause scripts"),
    N_("afterPrintPaused after the park, beforePrintResumed before the return, checked like the "
       "templates; pause_position is empty there, as SafePause parks"),
    N_("Axes homed after a power loss"), N_("X and Y only: homing Z would drive the nozzle into the part"),
    N_("Recovery prime"), N_("pushed where the printer heats before a recovered print goes on"),
    N_("Heat at the park position when recovering"),
    N_("Retract"), N_("filament pulled back at pause; 0 = none"), N_("Retract speed"), N_("Lift"),
    N_("at least this far up from the nozzle's Z"), N_("Clearance"),
    N_("above the highest printed point before any XY travel"), N_("Park"),
    N_("travel to the park position, else lift only"), N_("Park X"), N_("machine X; empty = automatic"),
    N_("Park Y"), N_("machine Y; empty = automatic"), N_("XY travel speed"), N_("Z speed"), N_("Prime"),
    N_("pushed at the park position on resume; 0 = none"), N_("Prime speed"),
    N_("Minimum extrusion temperature"), N_("Top margin"), N_("kept free below the top of the volume"),
    N_("Part fan off while paused"), N_("Keep motors on while paused"), N_("Firmware backstop"),
    N_("the firmware's own idle timeout during a hold, in case OctoPrint dies"),
    N_("Idle timeout after resume"),
    N_("0 = the firmware's stock value (Marlin 120, Prusa 60, Klipper 600, RepRapFirmware 30)"),
    N_("Hotend off after"), N_("0 = never"), N_("Bed off after"), N_("0 = never: keeps the part stuck"),
    N_("Filament change (M600)"),
    N_("host: SafePause parks, unloads, waits for you, loads and purges, and the file's M600 is never "
       "sent (over USB the firmware's own blocks the serial line; many stock firmwares ignore it); "
       "firmware: M600 goes to the printer"),
    N_("Change X"), N_("machine X; empty = the middle"), N_("Change Y"), N_("machine Y; empty = the front"),
    N_("Unload length"), N_("pulled back in all: past the extruder gears (a Bowden tube: its length)"),
    N_("Unload speed"), N_("Load length"), N_("pushed in before purging"), N_("Load speed"),
    N_("Purge length"), N_("extruded at the change position, and again for each Purge more"),
    N_("Purge speed"), N_("Hotend off during a change after"),
    N_("0 = never; loading and purging heat up and wait first"),
    N_("Pause G-code"), N_("Jinja2, sent after parking"), N_("Resume G-code"), N_("Jinja2, sent at the park position"),
)  # fmt: skip

# Setting groups of the settings page, in order: (title, field names).
SETTINGS_GROUPS = (
    (N_("Printer"), ("firmware", "hold_timeout", "take_over_pause", "run_octoprint_scripts")),
    (N_("Pause motion"), ("retract_length", "retract_speed", "lift", "clearance", "top_margin", "z_speed")),
    (N_("Park position"), ("park_enabled", "park_x", "park_y", "travel_speed")),
    (N_("Resume"), ("prime_extra", "prime_speed", "min_extrude_temp")),
    (N_("While paused"), ("fans_off", "keep_steppers", "hold_backstop", "idle_timeout_restore")),
    (N_("Long pauses: heaters"), ("hotend_off_after", "bed_off_after")),
    (
        N_("Filament change"),
        (
            "filament_change", "change_x", "change_y", "change_unload_length", "change_unload_speed",
            "change_load_length", "change_load_speed", "change_purge_length", "change_purge_speed",
            "change_hotend_off_after",
        ),
    ),
    (N_("Your own G-code"), ("pause_template", "resume_template")),
    (N_("Recovering a print that died"), ("recovery_home_axes", "recovery_prime_length", "recovery_park")),
)

# What the form shows for each value of a choice field.
CHOICE_LABELS = {
    "firmware": {
        "auto": N_("Automatic (from the firmware's name, else Marlin 2)"),
        "marlin": N_("Marlin 2"),
        "klipper": N_("Klipper"),
        "reprapfirmware": N_("RepRapFirmware"),
        "prusa": N_("Prusa firmware (MK3)"),
    },
    "recovery_home_axes": {"XY": N_("X and Y")},
    "filament_change": {
        "host": N_("By SafePause (the host): M600 is not sent"),
        "firmware": N_("By the firmware: M600 is sent"),
    },
}


def _sample_lines(volume):
    """A typical print's start and a few moves of its fifth layer, for the settings preview when no
    pause is live: heated, homed, relative E, part fan on, a slicer retraction just undone."""
    cx = volume.x_min + (volume.x_max - volume.x_min) * 0.4
    cy = volume.y_min + (volume.y_max - volume.y_min) * 0.4
    return [
        "G21", "G90", "M83", "M140 S60", "M104 S210", "G28", "M190 S60", "M109 S210",
        "G1 Z0.3 F3000", f"G1 X{cx:.1f} Y{cy:.1f} F9000", f"G1 X{cx + 20:.1f} Y{cy:.1f} E1.2 F1800",
        "M106 S255", "G1 Z1.1 F600", f"G1 X{cx + 20:.1f} Y{cy + 20:.1f} E0.9 F1800", "G1 E-0.8 F2100",
        f"G1 X{cx:.1f} Y{cy + 20:.1f} F9000", "G1 E0.8 F2100", f"G1 X{cx:.1f} Y{cy + 10:.1f} E0.4 F1500",
    ]  # fmt: skip


SAMPLE_TEMPERATURES = {"tool0": {"actual": 210.0, "target": 210.0}, "bed": {"actual": 60.0, "target": 60.0}}


def preview(values: dict, profile: dict, flavour: str, live=None, temperatures=None, render=render) -> dict:
    """Pause and resume G-code for `values` (raw settings): for the live pause `(state, plan)` when
    given, else for a sample print on `profile`. The templates are rendered with `render` (the plugin
    passes a TemplateRunner's, bounded in time) and go through the same safety check as at a pause:
    `errors` names what would be refused, by setting."""
    volume = Volume.from_profile(profile)
    settings = MotionSettings(**settings_schema.motion_kwargs(values, profile))
    if live is not None:
        state, plan = live
        source = "pause"
        flavour = plan.flavour or flavour
    else:
        tracker = StateTracker(flavour)
        for line in _sample_lines(volume):
            tracker.feed(line)
        state, source, temperatures = tracker.state, "sample", SAMPLE_TEMPERATURES

    plan = pause_sequence(state, volume, settings, temperatures=temperatures, flavour=flavour)
    warnings = list(plan.warnings)
    errors = {}
    rendered = {}
    for key in ("pause_template", "resume_template"):
        try:
            context = build_context(state, profile, settings, plan=plan, volume=volume)
            rendered[key] = render(values.get(key) or "", context, name=key)
        except TemplateError as error:
            rendered[key] = []
            errors[key] = str(error)
    pause = check_pause(state, plan, volume, rendered["pause_template"])
    resume = check_resume(state, plan, volume, settings, at_park=rendered["resume_template"])
    for key, checked in (("pause_template", pause), ("resume_template", resume)):
        if checked.user:
            errors[key] = f"{settings_schema.FIELDS[key].label}: refused by the safety check: {checked.user[0]}"
    return {
        "source": source,
        "flavour": flavour,
        "profile": profile.get("name") or profile.get("id"),
        "position": {"x": state.x, "y": state.y, "z": state.z},
        "pause": pause.lines,
        "resume": resume.lines,
        "warnings": warnings + [str(p) for p in pause.builtin + resume.builtin],
        "errors": errors,
    }


def template_vars() -> dict:
    """The settings form, generated from settings_schema.SCHEMA."""
    fields = {}
    for spec in settings_schema.SCHEMA:
        kind = "choice" if spec.choices else {bool: "bool", str: "text"}.get(spec.kind, "number")
        labels = CHOICE_LABELS.get(spec.name, {})
        fields[spec.name] = {
            "name": spec.name,
            "kind": kind,
            "unit": spec.unit,
            "label": spec.label or spec.name,
            "help": spec.help,
            "minimum": spec.minimum,
            "maximum": spec.maximum,
            "nullable": spec.nullable,
            "choices": [[value, labels.get(value, value)] for value in spec.choices],
        }
    groups = [{"title": title, "fields": [fields[name] for name in names]} for title, names in SETTINGS_GROUPS]
    return {"groups": groups}
