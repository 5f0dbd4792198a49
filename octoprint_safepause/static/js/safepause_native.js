/*
 * OctoPrint's own Pause / Resume / Cancel buttons while SafePause parks, resumes or cancels: the plugin
 * refuses them for that moment (octoprint_safepause/adapter/native_guard.py) with 409 and its status
 * under `safepause`. OctoPrint's view model ignores failures, so this one says why nothing happened,
 * and updates the sidebar's view model with the status at once.
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
            if (state === "pausing") {
                text = gettext("SafePause is still parking the head; resume once it is paused.");
            } else {
                text = gettext("SafePause is resuming or cancelling the print; try again in a moment.");
            }
            var details = SP.describe(body.safepause);
            new PNotify({
                title: gettext("SafePause"),
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
