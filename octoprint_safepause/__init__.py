"""OctoPrint-SafePause: OctoPrint wiring only (mixins, hooks, helpers, events, API, UI)."""

import json

import flask
import octoprint.plugin
from flask_babel import gettext
from octoprint.access import USER_GROUP
from octoprint.access.permissions import Permissions

from . import api, motion_settings, native_guard
from .controller import PauseController, Refused
from .firmware import choose_flavour, flavour_from_firmware_name
from .gcode import FLAVOURS, StateTracker
from .port import OctoPrintPort, state_from_id
from .sequences import MotionSettings, Volume, pause_sequence, resume_sequence
from .templates_gcode import TemplateError, build_context, render

FORWARDED_EVENTS = frozenset(
    [
        "PrintStarted",
        "PrintDone",
        "PrintFailed",
        "PrintCancelling",
        "PrintCancelled",
        "Disconnecting",
        "Disconnected",
        "Error",
    ]
)

SETTINGS_DEFAULTS = dict(
    motion_settings.defaults(),
    firmware="auto",  # or one of gcode.FLAVOURS; auto = from the firmware's M115 name, else Marlin 2
    hold_timeout=2.0,  # s to wait for a file line before taking the hold without one (long M109/G4)
    # OctoPrint's own Pause button and /api/job pause become SafePause pauses (docs/native-pause.md).
    # Off by default: clients that only know OctoPrint's state would then see "Printing" during the
    # pause and offer no Resume.
    take_over_pause=False,
)

API_PATH = "/api/plugin/safepause"

# Commands the plugin's REST API adds to api.COMMANDS for the settings dialog (SETTINGS permission).
UI_COMMANDS = {"validate": ["settings"], "preview": ["settings"]}

# Controller state fields the sidebar shows; the rest (the full tracker snapshot) stays out of the
# 0.5 s push to every browser.
UI_STATE_KEYS = (
    "state", "since", "holding", "error", "reason", "source", "file", "warnings", "heaters_off", "heater_action_in",
)  # fmt: skip


def N_(message):
    """Marks a message for extraction (babel's default keywords include N_); translated where shown."""
    return message


# motion_settings.SCHEMA's labels and help texts, so that babel_extract finds them; the settings
# template translates them with _(field.label). tests/unit/test_native_guard.py checks they match.
SCHEMA_TEXTS = (
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
    N_("Pause G-code"), N_("Jinja2, sent after parking"), N_("Resume G-code"), N_("Jinja2, sent at the park position"),
)  # fmt: skip

# Setting groups of the settings page, in order: (title, field names).
SETTINGS_GROUPS = (
    (N_("Pause motion"), ("retract_length", "retract_speed", "lift", "clearance", "top_margin", "z_speed")),
    (N_("Park position"), ("park_enabled", "park_x", "park_y", "travel_speed")),
    (N_("Resume"), ("prime_extra", "prime_speed", "min_extrude_temp")),
    (N_("While paused"), ("fans_off", "keep_steppers", "hold_backstop", "idle_timeout_restore")),
    (N_("Long pauses: heaters"), ("hotend_off_after", "bed_off_after")),
    (N_("Your own G-code"), ("pause_template", "resume_template")),
)

FIRMWARE_CHOICES = (
    ("auto", N_("Automatic (from the firmware's name, else Marlin 2)")),
    ("marlin", N_("Marlin 2")),
    ("klipper", N_("Klipper")),
    ("reprapfirmware", N_("RepRapFirmware")),
    ("prusa", N_("Prusa firmware (MK3)")),
)


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


class SafePausePlugin(
    octoprint.plugin.StartupPlugin,
    octoprint.plugin.ShutdownPlugin,
    octoprint.plugin.SettingsPlugin,
    octoprint.plugin.EventHandlerPlugin,
    octoprint.plugin.SimpleApiPlugin,
    octoprint.plugin.AssetPlugin,
    octoprint.plugin.TemplatePlugin,
):
    def __init__(self):
        self._detected_flavour = None
        # Built before OctoPrint injects anything, so that its bound `on_queuing` can be registered
        # as the hook itself (no extra call layer per line); it gets its port in initialize().
        self.controller = PauseController(port=None)

    # ~~ lifecycle

    def initialize(self):
        self.controller.bind(
            OctoPrintPort(self._printer, self._file_manager, self._printer_profile_manager),
            emit=self._fire,
            settings=self._raw_settings,
            flavour=self._flavour,
            logger=self._logger,
        )
        self.controller.hold_timeout = float(self._settings.get_float(["hold_timeout"]) or 2.0)
        self.controller.start()

    def on_shutdown(self):
        if self.controller is not None:
            self.controller.stop()

    def _fire(self, name, payload):
        self._event_bus.fire(f"plugin_{self._identifier}_{name}", payload)
        # Browsers learn of the change at once (the state itself also arrives every 0.5 s).
        try:
            self._plugin_manager.send_plugin_message(self._identifier, dict(payload or {}, type=name))
        except Exception:
            self._logger.exception("SafePause: could not notify the web interface")

    # ~~ settings

    def get_settings_defaults(self):
        return dict(SETTINGS_DEFAULTS)

    def _raw_settings(self):
        return {key: self._settings.get([key]) for key in SETTINGS_DEFAULTS}

    def _flavour(self):
        setting = self._settings.get(["firmware"])
        return choose_flavour(setting if setting in FLAVOURS else "auto", self._detected_flavour)

    def _check_settings(self, data):
        """(clean values of the schema, errors) for `data` merged over the stored settings."""
        profile = self._printer_profile_manager.get_current_or_default()
        candidate = dict(self._raw_settings(), **{k: v for k, v in data.items() if k in SETTINGS_DEFAULTS})
        clean, errors = motion_settings.validate(candidate, profile)
        if data.get("firmware") not in (None, "auto", *FLAVOURS):
            errors["firmware"] = f"unknown firmware '{data.get('firmware')}'"
        if "hold_timeout" in data:
            try:
                if not 0.1 <= float(data["hold_timeout"]) <= 60:
                    raise ValueError
            except (TypeError, ValueError):
                errors["hold_timeout"] = "hold_timeout must be a number of seconds from 0.1 to 60"
        if "take_over_pause" in data and not isinstance(data["take_over_pause"], bool):
            errors["take_over_pause"] = "take_over_pause must be true or false"
        return clean, errors

    def on_settings_save(self, data):
        # Refused values are dropped (the old value stays) and reported, never half-applied.
        clean, errors = self._check_settings(data)
        accepted = {k: v for k, v in data.items() if k not in errors}
        # Store typed values, not the form's strings ("5" -> 5.0, "" -> None for park X/Y).
        accepted.update({k: clean[k] for k in accepted if k in motion_settings.FIELDS})
        if "hold_timeout" in accepted:
            accepted["hold_timeout"] = float(accepted["hold_timeout"])
        if errors:
            self._logger.warning("SafePause settings refused: %s", errors)
            self._plugin_manager.send_plugin_message(self._identifier, {"type": "settings_errors", "errors": errors})
        octoprint.plugin.SettingsPlugin.on_settings_save(self, accepted)
        self.controller.hold_timeout = float(self._settings.get_float(["hold_timeout"]) or 2.0)
        return errors

    # ~~ hooks

    def get_additional_permissions(self, *args, **kwargs):
        return [
            {
                "key": "CONTROL",
                "name": "Safe pause control",
                "description": gettext("Allows to pause, resume and cancel prints with SafePause"),
                "roles": ["control"],
                "default_groups": [USER_GROUP],
                "dangerous": False,
            }
        ]

    def on_additional_state_data(self, initial=False, *args, **kwargs):
        """Pushed with OctoPrint's current data every 0.5 s (`data.plugins.safepause` in the browser):
        the sidebar's live state without any browser polling. Must be fast and must never raise
        (OctoPrint drops a hook that raises for good)."""
        try:
            return self.ui_state()
        except Exception:
            self._logger.exception("SafePause: building the state for the web interface failed")
            return {"state": "unknown"}

    def ui_state(self):
        full = self.controller.get_state()
        data = {key: full.get(key) for key in UI_STATE_KEYS}
        data["native_pause_pending"] = bool(full.get("holding")) and self._native_pause_pending()
        return data

    def _native_pause_pending(self):
        # While we hold, OctoPrint cannot get to "Paused": "Pausing" means someone inside OctoPrint
        # (the firmware's //action:pause, an @pause, another plugin) asked for its own pause, which
        # takes effect when the hold ends (docs/native-pause.md).
        try:
            return bool(self._printer.is_pausing() or self._printer.is_paused())
        except Exception:
            return False

    def get_api_before_request_handlers(self, plugin=None, *args, **kwargs):
        return [self._before_api_request]

    def _before_api_request(self):
        """Runs before every API and plugin request: only two POST paths are looked at."""
        request = flask.request
        if request.method != "POST":
            return None
        path = request.path.rstrip("/")
        if path == native_guard.JOB_PATH:
            return self._guard_native_job_command(request)
        if path == API_PATH:
            return self._refuse_malformed_command(request)
        return None

    def _refuse_malformed_command(self, request):
        # OctoPrint's SimpleApiPlugin dispatcher assumes a JSON object with a hashable "command" and
        # raises (a 500 with a traceback) on `null`, `42`, `["command"]` or {"command": [...]}.
        if not request.is_json:
            return None  # OctoPrint answers 415
        try:
            body = json.loads(request.get_data(cache=True) or b"")
        except ValueError:
            return None  # OctoPrint answers 400 for malformed JSON
        if isinstance(body, str) or (isinstance(body, list) and "command" not in body):
            return None  # OctoPrint's own "command is invalid"
        if isinstance(body, dict) and not isinstance(body.get("command"), (list, dict)):
            return None
        return flask.make_response(
            flask.jsonify(error="the body must be a JSON object with a string 'command'"), 400
        )

    def _guard_native_job_command(self, request):
        """OctoPrint's own Pause / Resume / Cancel while SafePause acts; see native_guard."""
        try:
            if not Permissions.PRINT.can():
                return None  # OctoPrint answers 403 itself
            decision = native_guard.decide(
                request.method,
                request.path,
                request.get_json(silent=True),
                self.controller.get_state,
                take_over_pause=bool(self._settings.get_boolean(["take_over_pause"])),
                printer_state=self._port_state(),
            )
            if decision is None:
                return None
            return self._apply_native_decision(decision)
        except Exception:
            self._logger.exception("SafePause: checking OctoPrint's own job command failed, passing it on")
            return None

    def _apply_native_decision(self, decision):
        user = self._current_user_name()
        try:
            if decision.action == native_guard.CANCEL:
                self.controller.cancel()
            elif decision.action == native_guard.RESUME:
                self.controller.resume()
            elif decision.action == native_guard.PAUSE:
                try:
                    self.controller.pause(
                        reason=native_guard.TAKE_OVER_REASON, source=f"user:{user}" if user else "api"
                    )
                except Refused as refused:
                    # e.g. an SD print: OctoPrint's own pause is the only one there is
                    self._logger.info("SafePause cannot take over this pause (%s): OctoPrint pauses", refused)
                    return None
        except Refused as refused:
            return self._native_refusal(f"SafePause: {refused}")
        if decision.status == 204:
            self._logger.info(
                "OctoPrint's own %s handled by SafePause (user %s)", decision.action, user or "unknown"
            )
            return flask.make_response("", 204)
        return self._native_refusal(decision.message)

    def _native_refusal(self, message):
        # `safepause` lets the web interface tell this 409 from OctoPrint's own and show it.
        body = {"error": message, "safepause": self.ui_state()}
        return flask.make_response(flask.jsonify(body), 409)

    def _port_state(self):
        try:
            return state_from_id(self._printer.get_state_id())
        except Exception:
            return None

    @staticmethod
    def _current_user_name():
        try:
            from flask_login import current_user

            return current_user.get_name() if current_user else None
        except Exception:
            return None

    def on_firmware_info(self, comm, firmware_name, firmware_data, *args, **kwargs):
        self._detected_flavour = flavour_from_firmware_name(firmware_name)

    def register_custom_events(self, *args, **kwargs):
        return ["paused", "resumed", "cancelled"]

    # ~~ events

    def on_event(self, event, payload):
        if event in FORWARDED_EVENTS and self.controller is not None:
            self.controller.on_printer_event(event, payload)

    # ~~ helpers for other plugins: they only enqueue, never block, never raise for a wrong state

    def helper_pause(self, reason=None, source=None):
        return self.controller.try_(self.controller.pause, reason=reason, source=source)

    def helper_resume(self):
        return self.controller.try_(self.controller.resume)

    def helper_cancel(self):
        return self.controller.try_(self.controller.cancel)

    def helper_get_state(self):
        return self.controller.get_state()

    # ~~ REST API

    def is_api_protected(self):
        return True

    def get_api_commands(self):
        commands = {name: list(params) for name, params in api.COMMANDS.items()}
        commands.update({name: list(params) for name, params in UI_COMMANDS.items()})
        return commands

    def on_api_get(self, request):
        if not Permissions.STATUS.can():
            flask.abort(403)
        state = self.controller.get_state()
        state["native_pause_pending"] = bool(state.get("holding")) and self._native_pause_pending()
        return flask.jsonify(state)

    def on_api_command(self, command, data):
        if command in UI_COMMANDS:
            return self._settings_command(command, data)
        if not (Permissions.PRINT.can() or Permissions.PLUGIN_SAFEPAUSE_CONTROL.can()):
            return flask.make_response(flask.jsonify(error="you are not allowed to pause or resume prints"), 403)
        user = self._current_user_name()
        status, body = api.handle_command(self.controller, command, data, user=user)
        return flask.make_response(flask.jsonify(body), status)

    # ~~ settings dialog: inline validation and the G-code preview

    def _settings_command(self, command, data):
        if not Permissions.SETTINGS.can():
            return flask.make_response(flask.jsonify(error="you are not allowed to change settings"), 403)
        values = data.get("settings")
        if not isinstance(values, dict):
            return flask.make_response(flask.jsonify(error="'settings' must be a JSON object"), 400)
        values = {k: v for k, v in values.items() if k in SETTINGS_DEFAULTS}
        _clean, errors = self._check_settings(values)
        if command == "validate":
            return flask.jsonify(errors=errors)
        return flask.jsonify(dict(self.preview(values), errors=errors))

    def preview(self, values):
        """The pause and resume G-code for the settings being edited: for the live pause when there is
        one (its state at the hold), else for a sample print on the current printer profile."""
        merged = dict(self._raw_settings(), **values)
        profile = self._printer_profile_manager.get_current_or_default() or {}
        volume = Volume.from_profile(profile)
        settings = MotionSettings(**motion_settings.motion_kwargs(merged, profile))
        setting = merged.get("firmware")
        flavour = choose_flavour(setting if setting in FLAVOURS else "auto", self._detected_flavour)

        live = self.controller.current_pause()
        if live is not None:
            state, plan = live
            source, temperatures = "pause", self._printer.get_current_temperatures() or {}
            flavour = plan.flavour or flavour
        else:
            tracker = StateTracker(flavour)
            for line in _sample_lines(volume):
                tracker.feed(line)
            state, source, temperatures = tracker.state, "sample", SAMPLE_TEMPERATURES

        plan = pause_sequence(state, volume, settings, temperatures=temperatures, flavour=flavour)
        warnings = list(plan.warnings)
        rendered = {}
        for key in ("pause_template", "resume_template"):
            try:
                context = build_context(state, profile, settings, plan=plan, volume=volume)
                rendered[key] = render(merged.get(key) or "", context, name=key)
            except TemplateError as error:
                rendered[key] = []
                warnings.append(str(error))
        resume = resume_sequence(state, plan, volume, settings, at_park=rendered["resume_template"])
        return {
            "source": source,
            "flavour": flavour,
            "profile": profile.get("name") or profile.get("id"),
            "position": {"x": state.x, "y": state.y, "z": state.z},
            "pause": list(plan.lines) + rendered["pause_template"],
            "resume": resume,
            "warnings": warnings,
        }

    # ~~ web interface

    def get_assets(self):
        return {"js": ["js/safepause.js"], "css": ["css/safepause.css"]}

    def is_template_autoescaped(self):
        return True

    def get_template_configs(self):
        return [
            {"type": "sidebar", "name": gettext("SafePause"), "icon": "fas fa-pause-circle", "custom_bindings": True},
            {"type": "settings", "name": gettext("SafePause"), "custom_bindings": True},
        ]

    def get_template_vars(self):
        fields = {}
        for spec in motion_settings.SCHEMA:
            fields[spec.name] = {
                "name": spec.name,
                "kind": {bool: "bool", str: "text"}.get(spec.kind, "number"),
                "unit": spec.unit,
                "label": spec.label or spec.name,
                "help": spec.help,
                "minimum": spec.minimum,
                "maximum": spec.maximum,
                "nullable": spec.nullable,
            }
        groups = [{"title": title, "fields": [fields[name] for name in names]} for title, names in SETTINGS_GROUPS]
        return {"groups": groups, "firmware_choices": [list(choice) for choice in FIRMWARE_CHOICES]}


__plugin_name__ = "SafePause"
__plugin_description__ = "Pause a print safely and resume it exactly where it stopped"
__plugin_license__ = "AGPLv3"
__plugin_pythoncompat__ = ">=3.9,<4"


def __plugin_load__():
    global __plugin_implementation__, __plugin_hooks__, __plugin_helpers__
    plugin = SafePausePlugin()
    __plugin_implementation__ = plugin
    __plugin_hooks__ = {
        # order 1: see the file line before anyone else, so a suppressed line is hidden from other hooks
        "octoprint.comm.protocol.gcode.queuing": (plugin.controller.on_queuing, 1),
        "octoprint.access.permissions": plugin.get_additional_permissions,
        "octoprint.events.register_custom_events": plugin.register_custom_events,
        "octoprint.comm.protocol.firmware.info": plugin.on_firmware_info,
        "octoprint.printer.additional_state_data": plugin.on_additional_state_data,
        "octoprint.server.api.before_request": plugin.get_api_before_request_handlers,
    }
    __plugin_helpers__ = {
        "pause": plugin.helper_pause,
        "resume": plugin.helper_resume,
        "cancel": plugin.helper_cancel,
        "get_state": plugin.helper_get_state,
    }
