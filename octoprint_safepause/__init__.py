"""OctoPrint-SafePause: OctoPrint wiring only (mixins, hooks, helpers, events, API)."""

import flask
import octoprint.plugin
from flask_babel import gettext
from octoprint.access import USER_GROUP
from octoprint.access.permissions import Permissions

from . import api, motion_settings
from .controller import PauseController
from .firmware import choose_flavour, flavour_from_firmware_name
from .gcode import FLAVOURS
from .port import OctoPrintPort

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
)


class SafePausePlugin(
    octoprint.plugin.StartupPlugin,
    octoprint.plugin.ShutdownPlugin,
    octoprint.plugin.SettingsPlugin,
    octoprint.plugin.EventHandlerPlugin,
    octoprint.plugin.SimpleApiPlugin,
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

    # ~~ settings

    def get_settings_defaults(self):
        return dict(SETTINGS_DEFAULTS)

    def _raw_settings(self):
        return {key: self._settings.get([key]) for key in SETTINGS_DEFAULTS}

    def _flavour(self):
        setting = self._settings.get(["firmware"])
        return choose_flavour(setting if setting in FLAVOURS else "auto", self._detected_flavour)

    def on_settings_save(self, data):
        # Refused values are dropped (the old value stays) and reported, never half-applied.
        profile = self._printer_profile_manager.get_current_or_default()
        candidate = dict(self._raw_settings(), **{k: v for k, v in data.items() if k in SETTINGS_DEFAULTS})
        _clean, errors = motion_settings.validate(candidate, profile)
        if data.get("firmware") not in (None, "auto", *FLAVOURS):
            errors["firmware"] = f"unknown firmware '{data.get('firmware')}'"
        if "hold_timeout" in data:
            try:
                if not 0.1 <= float(data["hold_timeout"]) <= 60:
                    raise ValueError
            except (TypeError, ValueError):
                errors["hold_timeout"] = "hold_timeout must be a number of seconds from 0.1 to 60"
        accepted = {k: v for k, v in data.items() if k not in errors}
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
        return {name: list(params) for name, params in api.COMMANDS.items()}

    def on_api_get(self, request):
        if not Permissions.STATUS.can():
            flask.abort(403)
        return flask.jsonify(self.controller.get_state())

    def on_api_command(self, command, data):
        if not (Permissions.PRINT.can() or Permissions.PLUGIN_SAFEPAUSE_CONTROL.can()):
            return flask.make_response(flask.jsonify(error="you are not allowed to pause or resume prints"), 403)
        user = None
        try:
            from flask_login import current_user

            user = current_user.get_name() if current_user else None
        except Exception:
            user = None
        status, body = api.handle_command(self.controller, command, data, user=user)
        return flask.make_response(flask.jsonify(body), status)


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
    }
    __plugin_helpers__ = {
        "pause": plugin.helper_pause,
        "resume": plugin.helper_resume,
        "cancel": plugin.helper_cancel,
        "get_state": plugin.helper_get_state,
    }
