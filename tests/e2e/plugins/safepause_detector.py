"""A test-only plugin that uses SafePause the way a failure detector would: through its helpers.

`POST /api/plugin/safepause_detector`:
  {"command": "detect", "reason": ...}   pause via the helper (from an HTTP thread)
  {"command": "clear"} / {"command": "abort"}   resume / cancel via the helpers
  {"command": "arm", "match": "G1 Z2.2"} pause from inside this plugin's own queuing hook (on
                                          OctoPrint's comm thread) when a line starting with it passes
`GET` returns the helper results and the SafePause events this plugin received.
"""

import threading

import flask
import octoprint.plugin


class DetectorPlugin(octoprint.plugin.SimpleApiPlugin, octoprint.plugin.EventHandlerPlugin):
    def __init__(self):
        self._lock = threading.Lock()
        self._events = []
        self._results = []
        self._match = None

    def _helpers(self):
        return self._plugin_manager.get_helpers("safepause", "pause", "resume", "cancel", "get_state")

    def is_api_protected(self):
        return True

    def get_api_commands(self):
        return {"detect": [], "clear": [], "abort": [], "arm": ["match"]}

    def on_api_command(self, command, data):
        helpers = self._helpers()
        if not helpers:
            return flask.make_response(flask.jsonify(error="safepause helpers missing"), 500)
        if command == "detect":
            result = helpers["pause"](reason=data.get("reason", "spaghetti"), source="plugin:detector")
        elif command == "clear":
            result = helpers["resume"]()
        elif command == "abort":
            result = helpers["cancel"]()
        else:
            with self._lock:
                self._match = data["match"]
            result = True
        with self._lock:
            self._results.append([command, result])
        return flask.jsonify(result=result, state=helpers["get_state"]())

    def on_api_get(self, request):
        with self._lock:
            return flask.jsonify(events=list(self._events), results=list(self._results))

    def on_event(self, event, payload):
        if event.startswith("plugin_safepause_"):
            with self._lock:
                self._events.append([event, payload])

    def on_queuing(self, comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
        match = self._match
        if match and cmd.startswith(match):
            self._match = None
            helpers = self._helpers()
            result = helpers["pause"](reason="seen " + match, source="plugin:detector:hook")
            with self._lock:
                self._results.append(["hook", result])
        return None


__plugin_name__ = "SafePause test detector"
__plugin_pythoncompat__ = ">=3.7,<4"


def __plugin_load__():
    global __plugin_implementation__, __plugin_hooks__
    __plugin_implementation__ = DetectorPlugin()
    __plugin_hooks__ = {"octoprint.comm.protocol.gcode.queuing": __plugin_implementation__.on_queuing}
