"""OctoPrint-SafePause: OctoPrint wiring only (mixins, hooks, helpers, events, API, UI)."""

import json
from types import SimpleNamespace

import flask
import octoprint.plugin
from flask_babel import gettext
from octoprint.access import USER_GROUP
from octoprint.access.permissions import Permissions

from .adapter import native_guard
from .adapter.octoprint_port import OctoPrintPort
from .core import commands, settings_page, settings_schema, status
from .core.controller import PauseController
from .core.firmware import choose_flavour, flavour_from_firmware_name
from .core.recovery.service import RecoveryRefused, RecoveryService
from .core.schedule import StopRefused
from .core.scheduler import Scheduler
from .core.template_runner import TemplateRunner

RECOVERY_EVENTS = frozenset(
    ["PrintStarted", "PrintDone", "PrintFailed", "PrintCancelling", "PrintCancelled", "Disconnected", "Error"]
)
FORWARDED_EVENTS = frozenset(
    [
        "PrintStarted",
        "PrintResumed",
        "PrinterStateChanged",
        "PrintDone",
        "PrintFailed",
        "PrintCancelling",
        "PrintCancelled",
        "Disconnecting",
        "Disconnected",
        "Error",
    ]
)

# Every setting, its default, type and bounds: settings_schema.SCHEMA (docs/native-pause.md for
# take_over_pause and run_octoprint_scripts).
SETTINGS_DEFAULTS = settings_schema.defaults()

API_PATH = "/api/plugin/safepause"
TEMPLATE_KEYS = ("pause_template", "resume_template")




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
        self.port = None
        self.recovery = None
        self.scheduler = None
        # Built before OctoPrint injects anything, so that its bound `on_queuing` can be registered
        # as the hook itself (no extra call layer per line); it gets its port in initialize().
        self.controller = PauseController(port=None)
        # validate / preview / save render templates as the user types: a runner of their own, so that
        # they never wait behind (or hold up) the controller's
        self._web_templates = TemplateRunner()

    # ~~ lifecycle

    def initialize(self):
        # The one adapter: the controller, the recovery service and the plugin itself reach OctoPrint's
        # printer, files and profiles through it.
        self.port = OctoPrintPort(
            self._printer,
            self._file_manager,
            self._printer_profile_manager,
            load_script=lambda name: self._settings.settings.loadScript("gcode", name, source=True),
        )
        self.recovery = RecoveryService(
            self.get_plugin_data_folder(),
            self.port,
            flavour=self._flavour,
            settings=self._raw_settings,
            emit=self._fire,
            logger=self._logger,
        )
        self.controller.bind(
            self.port,
            emit=self._fire,
            settings=self._raw_settings,
            flavour=self._flavour,
            logger=self._logger,
            recovery=self.recovery,
        )
        self.scheduler = Scheduler(self.port, self.controller, self.recovery.layers_of, logger=self._logger)
        self.controller.hold_timeout = self._hold_timeout()
        self.controller.start()

    def on_after_startup(self):
        self.recovery.start()

    def on_shutdown(self):
        if self.controller is not None:
            self.controller.stop()
        self._web_templates.close()
        if self.recovery is not None:
            self.recovery.stop()

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
        return choose_flavour(setting, self._detected_flavour)

    def _check_settings(self, data):
        """(clean values of the schema, errors) for `data` merged over the stored settings."""
        profile = self.port.profile()
        candidate = dict(self._raw_settings(), **{k: v for k, v in data.items() if k in SETTINGS_DEFAULTS})
        return settings_schema.validate(candidate, profile)

    def on_settings_save(self, data):
        # Refused values are dropped (the old value stays) and reported, never half-applied; accepted
        # ones are stored typed ("5" -> 5.0, "" -> None for park X/Y).
        data = data if isinstance(data, dict) else {}
        clean, errors = self._check_settings(data)
        if any(key in data for key in TEMPLATE_KEYS):
            errors = dict(self._checked_settings(data)["errors"], **errors)
        accepted = {k: clean[k] if k in SETTINGS_DEFAULTS else v for k, v in data.items() if k not in errors}
        if errors:
            self._logger.warning("SafePause settings refused: %s", errors)
            self._plugin_manager.send_plugin_message(self._identifier, {"type": "settings_errors", "errors": errors})
        octoprint.plugin.SettingsPlugin.on_settings_save(self, accepted)
        self.controller.hold_timeout = self._hold_timeout()
        self.controller.configure()
        return errors

    def _hold_timeout(self):
        clean, _errors = settings_schema.validate({"hold_timeout": self._settings.get(["hold_timeout"])}, None)
        return clean["hold_timeout"]

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
        return status.ui(self.controller.get_state())

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
        except RecursionError:
            return flask.make_response(flask.jsonify(error="the JSON body is nested too deeply"), 400)
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
        if decision.action is None:
            if decision.status < 300:
                return flask.make_response("", decision.status)
            return self._native_refusal(decision.message)
        user = self._current_user_name()
        params = {}
        if decision.action == native_guard.PAUSE:
            params = {"reason": native_guard.TAKE_OVER_REASON}
        status, body = commands.run(self._actions, decision.action, params, source=self._source(user))
        if status >= 300:
            if decision.action == native_guard.PAUSE:
                # e.g. an SD print: OctoPrint's own pause is the only one there is
                self._logger.info("SafePause cannot take over this pause (%s): OctoPrint pauses", body["error"])
                return None
            return self._native_refusal(f"SafePause: {body['error']}")
        self._logger.info("OctoPrint's own %s handled by SafePause (user %s)", decision.action, user or "unknown")
        return flask.make_response("", 204)

    def _native_refusal(self, message):
        # `safepause` lets the web interface tell this 409 from OctoPrint's own and show it.
        body = {"error": message, "safepause": self.ui_state()}
        return flask.make_response(flask.jsonify(body), 409)

    def _port_state(self):
        try:
            return self.port.state()
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
        return [
            "paused",
            "resumed",
            "cancelled",
            "filament_change",
            "stop_reached",
            "recovery_available",
            "recovered",
            "recovery_discarded",
        ]

    # ~~ events

    def on_event(self, event, payload):
        if event in FORWARDED_EVENTS and self.controller is not None:
            self.controller.on_printer_event(event, payload)
        if event in RECOVERY_EVENTS and self.recovery is not None:
            self.recovery.on_event(event, payload)  # first: it starts the index the schedule waits for
        if event in RECOVERY_EVENTS and self.scheduler is not None:
            self.scheduler.on_event(event, payload)

    # ~~ helpers for other plugins: they only enqueue, never block, never raise for a wrong state

    @property
    def _actions(self):
        """What the command table acts on (commands.run)."""
        return SimpleNamespace(
            controller=self.controller,
            recovery=self.recovery,
            scheduler=self.scheduler,
            check_settings=self._checked_settings,
        )

    def _helper(self, name, **params):
        status, body = commands.run(self._actions, name, params)
        if status >= 300:
            self._logger.info("SafePause helper %s refused: %s", name, body.get("error"))
            return False
        return True

    def helper_pause(self, reason=None, source=None):
        return self._helper("pause", reason=reason, source=source)

    def helper_change_filament(self, reason=None, source=None):
        return self._helper("change_filament", reason=reason, source=source)

    def helper_resume(self):
        return self._helper("resume")

    def helper_cancel(self):
        return self._helper("cancel")

    def helper_schedule(self, at, action="pause", gcode=None, message=None, path=None):
        """A scheduled stop (docs/scheduled-stops.md): the stop as the status shows it, or None."""
        status, body = commands.run(
            self._actions, "schedule", {"at": at, "action": action, "gcode": gcode, "message": message, "path": path}
        )
        if status >= 300:
            self._logger.info("SafePause helper schedule refused: %s", body.get("error"))
            return None
        return body["stop"]

    def helper_unschedule(self, stop_id, path=None):
        return self._helper("unschedule", id=stop_id, path=path)

    def helper_get_stops(self, path=None):
        try:
            return self.scheduler.stops(path)
        except (StopRefused, ValueError) as refused:
            self._logger.info("SafePause helper get_stops refused: %s", refused)
            return None

    def helper_get_state(self):
        return self.controller.get_state()

    def helper_get_recovery(self):
        try:
            return self.recovery.get_recovery()
        except Exception:
            self._logger.exception("SafePause: reading the recovery failed")
            return None

    def helper_recover(self, **choices):
        return self._helper("recover", **choices)

    def helper_discard(self):
        return self._helper("discard")

    # ~~ REST API

    def is_api_protected(self):
        return True

    def get_api_commands(self):
        return {name: [] for name in commands.COMMANDS}  # parameters are checked by commands.run

    def on_api_get(self, request):
        # whoever may pause may also see what the pause is doing
        if not (Permissions.STATUS.can() or Permissions.PLUGIN_SAFEPAUSE_CONTROL.can()):
            return self._forbidden("you are not allowed to see the printer's status")
        state = self.controller.get_state()
        choices, error = commands.recovery_query(request.args)
        if error:
            return flask.make_response(flask.jsonify(error=error), 400)
        if "schedule" in request.args:
            # a file's layers and stops, for the "Pause at height..." dialog (may start an index build)
            if not self._can(commands.CONTROL):
                return self._forbidden("you are not allowed to schedule pauses")
            try:
                state["schedule"] = self.scheduler.file_schedule(request.args.get("schedule"))
            except ValueError as refused:
                return flask.make_response(flask.jsonify(error=str(refused)), 400)
            except StopRefused as refused:
                return flask.make_response(flask.jsonify(error=str(refused)), refused.status)
        try:
            if "path" in choices and self.recovery is not None:
                # a local file from a height: its layers and, with z, the prelude (this may start an
                # index build: only for those who may start prints)
                if not self._can(commands.CONTROL):
                    return self._forbidden("you are not allowed to recover prints")
                state["from_height"] = self.recovery.from_height(
                    choices["path"], choices.get("z"), choices.get("position_kept"), choices.get("power_lost")
                )
                choices = {k: v for k, v in choices.items() if k not in ("path", "z", "position_kept")}
            state["recovery"] = self.recovery.get_recovery(**choices) if self.recovery else None
        except RecoveryRefused as refused:
            return flask.make_response(flask.jsonify(error=str(refused)), refused.status)
        return flask.jsonify(state)

    def on_api_command(self, command, data):
        refused = commands.refusal(command, data, self._can)
        if refused:
            return self._forbidden(refused)
        status, body = commands.run(self._actions, command, data, source=self._source(self._current_user_name()))
        return flask.make_response(flask.jsonify(body), status)

    @staticmethod
    def _can(permission):
        if permission == commands.SETTINGS:
            return Permissions.SETTINGS.can()
        if permission == commands.CONTROL:
            return Permissions.PRINT.can() or Permissions.PLUGIN_SAFEPAUSE_CONTROL.can()
        return Permissions.CONTROL.can()  # the user's own G-code: what OctoPrint's terminal asks for

    @staticmethod
    def _source(user):
        return f"user:{user}" if user else "api"

    @staticmethod
    def _forbidden(message):
        return flask.make_response(flask.jsonify(error=message), 403)

    # ~~ settings dialog: inline validation and the G-code preview

    def _checked_settings(self, values):
        """The preview of `values` merged over the stored settings, with `errors`: the schema's and what
        the templates would make refused (their time and output bounded, their lines safety-checked)."""
        clean, errors = self._check_settings(values)
        preview = self.preview(values)
        for key, message in preview["errors"].items():
            errors.setdefault(key, message)
        return dict(preview, errors=errors)

    def preview(self, values):
        """The pause and resume G-code for the settings being edited: for the live pause when there is
        one (its state at the hold), else for a sample print on the current printer profile."""
        merged = dict(self._raw_settings(), **values)
        profile = self.port.profile() or {}
        setting = merged.get("firmware")
        flavour = choose_flavour(setting, self._detected_flavour)
        live = self.controller.current_pause()
        temperatures = self.port.temperatures() if live is not None else None
        return settings_page.preview(
            merged, profile, flavour, live=live, temperatures=temperatures, render=self._web_templates.render
        )

    # ~~ web interface

    def get_assets(self):
        # In load order: the shared module first, then one view model per file (the recovery, the
        # from-a-height and the native-buttons view models depend on the sidebar's).
        return {
            "js": [
                "js/safepause_shared.js",
                "js/safepause_sidebar.js",
                "js/safepause_recovery.js",
                "js/safepause_height.js",
                "js/safepause_schedule.js",
                "js/safepause_native.js",
                "js/safepause_settings.js",
            ],
            "css": ["css/safepause.css"],
        }

    def is_template_autoescaped(self):
        return True

    def get_template_configs(self):
        return [
            {"type": "sidebar", "name": gettext("SafePause"), "icon": "fas fa-pause-circle", "custom_bindings": True},
            {"type": "settings", "name": gettext("SafePause"), "custom_bindings": True},
        ]

    def get_template_vars(self):
        return settings_page.template_vars()


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
        "change_filament": plugin.helper_change_filament,
        "resume": plugin.helper_resume,
        "cancel": plugin.helper_cancel,
        "get_state": plugin.helper_get_state,
        "schedule": plugin.helper_schedule,
        "unschedule": plugin.helper_unschedule,
        "get_stops": plugin.helper_get_stops,
        "get_recovery": plugin.helper_get_recovery,
        "recover": plugin.helper_recover,
        "discard": plugin.helper_discard,
    }
