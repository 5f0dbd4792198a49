"""OctoPrint-SafePause: OctoPrint wiring only (mixins, hooks, helpers, events, API)."""

import flask
import octoprint.plugin
from flask_babel import gettext
from octoprint.access import USER_GROUP
from octoprint.access.permissions import Permissions

from . import api
from .controller import PauseController
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

SETTINGS_DEFAULTS = {
    "firmware": "marlin",
    "hold_timeout": 2.0,
    "retract_length": 2.0,
    "retract_speed": 35.0,
    "lift": 5.0,
    "clearance": 2.0,
    "park_enabled": True,
    "park_x": 0.0,
    "park_y": 0.0,
    "travel_speed": 100.0,
    "z_speed": 10.0,
    "prime_extra": 0.0,
    "min_extrude_temp": 170.0,
    "top_margin": 0.0,
}


class SafePausePlugin(
    octoprint.plugin.StartupPlugin,
    octoprint.plugin.ShutdownPlugin,
    octoprint.plugin.SettingsPlugin,
    octoprint.plugin.EventHandlerPlugin,
    octoprint.plugin.SimpleApiPlugin,
):
    def __init__(self):
        # Built before OctoPrint injects anything, so that its bound `on_queuing` can be registered
        # as the hook itself (no extra call layer per line); it gets its port in initialize().
        self.controller = PauseController(port=None)

    # ~~ lifecycle

    def initialize(self):
        self.controller.bind(
            OctoPrintPort(self._printer, self._file_manager, self._printer_profile_manager),
            emit=self._fire,
            settings=self._motion_settings,
            flavour=lambda: self._settings.get(["firmware"]) or "marlin",
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

    def _motion_settings(self):
        values = {key: self._settings.get([key]) for key in SETTINGS_DEFAULTS}
        motion = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        motion.pop("hold_timeout", None)
        park = None
        if values.get("park_enabled"):
            park = (motion.pop("park_x", 0.0), motion.pop("park_y", 0.0))
        motion.pop("park_x", None)
        motion.pop("park_y", None)
        motion["park"] = park
        return motion

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
    }
    __plugin_helpers__ = {
        "pause": plugin.helper_pause,
        "resume": plugin.helper_resume,
        "cancel": plugin.helper_cancel,
        "get_state": plugin.helper_get_state,
    }
