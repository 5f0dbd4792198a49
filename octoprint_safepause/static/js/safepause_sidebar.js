/*
 * The SafePause sidebar: what SafePause is doing with the print, and its Pause, Resume and Cancel.
 *
 * The live state arrives with OctoPrint's own current-data push (data.plugins.safepause, every 0.5 s,
 * from the plugin's octoprint.printer.additional_state_data hook) and pauses as plugin messages, so
 * no browser polls the REST API. Commands go to POST /api/plugin/safepause (SafePause.command).
 * The recoverable print below the buttons has its own view model (safepause_recovery.js).
 */
$(function () {
    var SP = window.SafePause;

    function SafePauseViewModel(parameters) {
        var self = this;

        self.loginState = parameters[0];
        self.access = parameters[1];
        self.printerState = parameters[2];

        self.state = ko.observable("unknown");
        self.since = ko.observable(null);
        self.reason = ko.observable(null);
        self.source = ko.observable(null);
        self.warnings = ko.observableArray([]);
        self.error = ko.observable(null);
        self.waiting = ko.observable(null); // "layers": held until the file's layers are read
        self.heatersOff = ko.observable(false);
        self.heaterActionIn = ko.observable(null);
        self.requesting = ko.observable(false);
        self.changeStep = ko.observable(null); // a filament change: unloading, unloaded, purging, loaded
        self.purged = ko.observable(0);

        self.canControl = ko.pureComputed(function () {
            var permissions = self.access.permissions;
            return self.loginState.hasAnyPermission(
                permissions.PRINT,
                permissions.PLUGIN_SAFEPAUSE_CONTROL
            );
        });

        self.stateText = ko.pureComputed(function () {
            switch (self.state()) {
                case "pausing":
                    return gettext("Pausing");
                case "paused":
                    return gettext("Paused");
                case "resuming":
                    return gettext("Resuming");
                case "cancelling":
                    return gettext("Cancelling");
                case "idle":
                    if (self.printerState.isPaused() || self.printerState.isPausing()) {
                        return gettext("Paused by OctoPrint, not by SafePause");
                    }
                    if (!self.printerState.isPrinting()) return gettext("Not printing");
                    return self.waiting() === "layers"
                        ? gettext("Printing: waits until the file's layers are read (it has scheduled stops)")
                        : gettext("Printing");
                default:
                    return gettext("Unknown");
            }
        });
        self.stateClass = ko.pureComputed(function () {
            var state = self.state();
            return state === "paused" || state === "pausing" ? "text-warning" : "";
        });
        self.sinceText = ko.pureComputed(function () {
            if (self.state() !== "paused" || !self.since()) return "";
            return _.sprintf(gettext("since %(time)s"), {time: SP.clock(self.since())});
        });
        self.isActive = ko.pureComputed(function () {
            return self.state() !== "idle" && self.state() !== "unknown";
        });
        self.whoText = ko.pureComputed(function () {
            return self.isActive() ? SP.whoFrom(self.source()) : null;
        });
        self.heaterText = ko.pureComputed(function () {
            if (self.state() !== "paused") return null;
            if (self.heatersOff()) {
                return gettext("switched off; Resume heats up and waits first");
            }
            var seconds = self.heaterActionIn();
            if (seconds === null || seconds === undefined) return gettext("on");
            return _.sprintf(gettext("on; the long-pause policy acts in %(time)s"), {
                time: formatDuration(Math.ceil(seconds))
            });
        });

        self.changeText = ko.pureComputed(function () {
            switch (self.changeStep()) {
                case "unloading":
                    return gettext("Filament change: parking and unloading...");
                case "unloaded":
                    return gettext("Filament unloaded. Put the new filament in, then Load and purge (Resume loads and purges as well).");
                case "purging":
                    return gettext("Loading and purging...");
                case "loaded":
                    return _.sprintf(gettext("Purged %(length)s mm. Purge more until the new colour comes out clean, then Resume."), {
                        length: self.purged()
                    });
                default:
                    return "";
            }
        });
        self.purgeLabel = ko.pureComputed(function () {
            return self.changeStep() === "loaded" ? gettext("Purge more") : gettext("Load and purge");
        });
        self.enablePurge = ko.pureComputed(function () {
            var step = self.changeStep();
            return (
                self.canControl() &&
                !self.requesting() &&
                self.state() === "paused" &&
                (step === "unloaded" || step === "loaded")
            );
        });

        self.printing = ko.pureComputed(function () {
            var ps = self.printerState;
            return ps.isPrinting() && !ps.isPausing() && !ps.isPaused() && !ps.isCancelling();
        });
        self.enablePause = ko.pureComputed(function () {
            return self.canControl() && !self.requesting() && self.state() === "idle" && self.printing();
        });
        self.enableResume = ko.pureComputed(function () {
            return self.canControl() && !self.requesting() && self.state() === "paused";
        });
        self.enableCancel = ko.pureComputed(function () {
            var state = self.state();
            return (
                self.canControl() &&
                !self.requesting() &&
                (state === "paused" || state === "pausing")
            );
        });

        // The status (octoprint_safepause/status.py): from the push, a command's answer or a 409.
        self.fromState = function (data) {
            if (!data) return;
            self.state(data.state || "unknown");
            self.since(data.since || null);
            self.reason(data.reason || null);
            self.source(data.source || null);
            self.warnings(data.warnings || []);
            self.error(data.error || null);
            self.waiting(data.waiting || null);
            self.heatersOff(!!data.heaters_off);
            self.heaterActionIn(
                data.heater_action_in === undefined ? null : data.heater_action_in
            );
            self.changeStep(data.change ? data.change.step : null);
            self.purged(data.change ? data.change.purged : 0);
        };

        self._fromData = function (data) {
            if (!data || !data.plugins || !data.plugins[SP.PLUGIN]) return;
            self.fromState(data.plugins[SP.PLUGIN]);
            // OctoPrint says Paused once the head is parked; while SafePause parks or cancels it still
            // says Printing: say what is going on.
            var state = self.state();
            if ((state === "pausing" || state === "cancelling") && data.state && data.state.text) {
                self.printerState.stateString(
                    _.sprintf(gettext("%(octoprint)s (SafePause: %(safepause)s)"), {
                        octoprint: data.state.text,
                        safepause: self.stateText()
                    })
                );
            }
        };
        self.fromCurrentData = self._fromData;
        self.fromHistoryData = self._fromData;

        self._command = function (command) {
            self.requesting(true);
            return SP.command(command)
                .done(function (response) {
                    if (response && response.state) self.fromState(response.state);
                })
                .fail(SP.notifyError)
                .always(function () {
                    self.requesting(false);
                });
        };

        self.pause = function () {
            self._command("pause");
        };
        self.resume = function () {
            self._command("resume");
        };
        self.changeFilament = function () {
            self._command("change_filament");
        };
        self.purge = function () {
            self._command("purge");
        };
        self.cancel = function () {
            showConfirmationDialog({
                message: gettext(
                    "This will cancel the paused print. The line SafePause held back is not sent."
                ),
                cancel: gettext("No, keep it paused"),
                proceed: gettext("Yes, cancel the print"),
                onproceed: function () {
                    self._command("cancel");
                },
                nofade: true
            });
        };

        self.onDataUpdaterPluginMessage = function (plugin, data) {
            if (plugin !== SP.PLUGIN || !data) return;
            if (data.type === "filament_change" && data.step === "unloaded") {
                // whoever asked: the printer now waits for someone to put the new filament in
                new PNotify({
                    title: gettext("Filament change"),
                    text: gettext("The filament is unloaded: the printer waits for the new one."),
                    type: "info",
                    hide: false
                });
                return;
            }
            if (data.type !== "paused") return;
            // A pause this browser's user asked for needs no pop-up; anyone else's (another plugin,
            // another user, a script) does. A scheduled stop has its own (safepause_schedule.js).
            var mine = self.loginState.username() && data.source === "user:" + self.loginState.username();
            if (!mine && data.source !== "schedule") {
                new PNotify({
                    title: gettext("Print paused by SafePause"),
                    text: SP.describe(data),
                    type: "notice",
                    hide: false
                });
            }
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseViewModel,
        dependencies: ["loginStateViewModel", "accessViewModel", "printerStateViewModel"],
        elements: ["#sidebar_plugin_safepause"]
    });
});
