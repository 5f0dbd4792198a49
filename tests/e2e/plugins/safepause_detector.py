"""A test-only plugin that uses SafePause the way a failure detector would: through its helpers.

`POST /api/plugin/safepause_detector`:
  {"command": "detect", "reason": ...}   pause via the helper (from an HTTP thread)
  {"command": "clear"} / {"command": "abort"}   resume / cancel via the helpers
  {"command": "runout", "reason": ...}   a filament change via the helper, as a runout sensor would
  {"command": "arm", "match": "G1 Z2.2"} pause from inside this plugin's own queuing hook (on
                                          OctoPrint's comm thread) when a line starting with it passes
  {"command": "octoprint_pause"} / {"command": "octoprint_resume"}   OctoPrint's own
                                          printer.pause_print() / resume_print(), as any plugin calls them
`GET` returns the helper results and the events this plugin received: SafePause's own
(plugin_safepause_*) and OctoPrint's print/connection events, in order, each as [name, payload].

A result is [command, return value, thread name, seconds the helper call took]; a pause from the hook
is recorded as command "hook", with the line that triggered it as a fifth element.
"""

import threading
import time

import flask
import octoprint.plugin

# OctoPrint's events recorded besides SafePause's own, so that tests see the order of both
RECORDED_EVENTS = frozenset(
    [
        "PrintStarted",
        "PrintPaused",
        "PrintResumed",
        "PrintDone",
        "PrintFailed",
        "PrintCancelling",
        "PrintCancelled",
        "Disconnected",
    ]
)


class DetectorPlugin(octoprint.plugin.SimpleApiPlugin, octoprint.plugin.EventHandlerPlugin):
    def __init__(self):
        self._lock = threading.Lock()
        self._events = []
        self._results = []
        self._match = None

    def _helpers(self):
        return self._plugin_manager.get_helpers(
            "safepause", "pause", "change_filament", "resume", "cancel", "get_state"
        )

    def _record(self, command, call, *extra):
        started = time.monotonic()
        result = call()
        elapsed = time.monotonic() - started
        with self._lock:
            self._results.append([command, result, threading.current_thread().name, elapsed, *extra])
        return result

    def is_api_protected(self):
        return True

    def get_api_commands(self):
        return {
            "detect": [],
            "runout": [],
            "clear": [],
            "abort": [],
            "arm": ["match"],
            "octoprint_pause": [],
            "octoprint_resume": [],
        }

    def on_api_command(self, command, data):
        helpers = self._helpers()
        if not helpers:
            return flask.make_response(flask.jsonify(error="safepause helpers missing"), 500)
        if command == "detect":
            reason = data.get("reason", "spaghetti")
            result = self._record(command, lambda: helpers["pause"](reason=reason, source="plugin:detector"))
        elif command == "runout":
            reason = data.get("reason", "runout")
            result = self._record(
                command, lambda: helpers["change_filament"](reason=reason, source="plugin:detector")
            )
        elif command == "clear":
            result = self._record(command, helpers["resume"])
        elif command == "abort":
            result = self._record(command, helpers["cancel"])
        elif command == "octoprint_pause":
            result = self._record(command, self._printer.pause_print)
        elif command == "octoprint_resume":
            result = self._record(command, self._printer.resume_print)
        else:
            with self._lock:
                self._match = data["match"]
            result = True
        return flask.jsonify(result=result, state=helpers["get_state"]())

    def on_api_get(self, request):
        with self._lock:
            return flask.jsonify(events=list(self._events), results=list(self._results))

    def on_event(self, event, payload):
        if event.startswith("plugin_safepause_") or event in RECORDED_EVENTS:
            with self._lock:
                self._events.append([event, payload])

    def on_queuing(self, comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
        match = self._match
        if match and cmd.startswith(match):
            self._match = None
            helpers = self._helpers()
            self._record(
                "hook",
                lambda: helpers["pause"](reason="seen " + match, source="plugin:detector:hook"),
                cmd,
            )
        return None


__plugin_name__ = "SafePause test detector"
__plugin_pythoncompat__ = ">=3.7,<4"


def __plugin_load__():
    global __plugin_implementation__, __plugin_hooks__
    __plugin_implementation__ = DetectorPlugin()
    __plugin_hooks__ = {"octoprint.comm.protocol.gcode.queuing": __plugin_implementation__.on_queuing}
