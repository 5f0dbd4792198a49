/*
 * OctoPrint's own Pause / Resume / Cancel buttons during a SafePause pause: the plugin refuses some of
 * them (octoprint_safepause/native_guard.py) with 409 and its status under `safepause`. OctoPrint's
 * view model ignores failures, so this one says why nothing happened, and updates the sidebar's view
 * model with the status at once.
 */
$(function () {
    var SP = window.SafePause;

    function SafePauseNativeButtonsViewModel(parameters) {
        var self = this;

        self.sidebar = parameters[0];

        self.onAjaxError = function (event, jqXHR, settings) {
            if (!jqXHR || jqXHR.status !== 409 || !settings || !/api\/job\/?$/.test(settings.url || "")) {
                return;
            }
            var body = jqXHR.responseJSON;
            if (!body || !body.safepause) return;
            self.sidebar.fromState(body.safepause);
            var state = body.safepause.state;
            var text;
            if (state === "paused") {
                text = gettext("The print is already paused by SafePause. Use Resume in the SafePause panel to continue.");
            } else if (state === "pausing") {
                text = gettext("SafePause is pausing the print right now.");
            } else {
                text = gettext("SafePause is resuming or cancelling the print; try again in a moment.");
            }
            var details = SP.describe(body.safepause);
            new PNotify({
                title: gettext("Already paused by SafePause"),
                text: details ? text + " " + details : text,
                type: "notice"
            });
        };

        $(document).ajaxError(self.onAjaxError);
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseNativeButtonsViewModel,
        dependencies: ["safePauseViewModel"],
        elements: []
    });
});
