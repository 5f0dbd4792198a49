"""OctoPrint-SafePause: OctoPrint wiring only (mixins, hooks, helpers)."""

import octoprint.plugin


class SafePausePlugin(
    octoprint.plugin.StartupPlugin,
    octoprint.plugin.SettingsPlugin,
):
    def get_settings_defaults(self):
        return {}


__plugin_name__ = "SafePause"
__plugin_pythoncompat__ = ">=3.9,<4"


def __plugin_load__():
    global __plugin_implementation__
    __plugin_implementation__ = SafePausePlugin()
