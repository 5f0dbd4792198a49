/*
 * SafePause in OctoPrint's web interface: the sidebar panel and the settings page.
 *
 * The live state arrives with OctoPrint's own current-data push (data.plugins.safepause, every 0.5 s,
 * from the plugin's octoprint.printer.additional_state_data hook) and events as plugin messages, so
 * no browser polls the REST API. Commands go to POST /api/plugin/safepause.
 */
$(function () {
    var PLUGIN = "safepause";

    function escape(text) {
        return _.escape(text === undefined || text === null ? "" : String(text));
    }

    function clock(epochSeconds) {
        return moment.unix(epochSeconds).format("HH:mm");
    }

    // "user:admin" -> "admin", "plugin:detector" -> "plugin detector", "api" -> "REST API"
    function whoFrom(source) {
        if (!source) return null;
        var index = source.indexOf(":");
        var kind = index < 0 ? source : source.substring(0, index);
        var name = index < 0 ? "" : source.substring(index + 1);
        if (kind === "user" && name) return name;
        if (kind === "plugin" && name) {
            return _.sprintf(gettext("plugin %(name)s"), {name: name});
        }
        if (source === "api") return gettext("REST API");
        return source;
    }

    function errorText(jqXHR) {
        if (jqXHR && jqXHR.responseJSON && jqXHR.responseJSON.error) {
            return jqXHR.responseJSON.error;
        }
        return jqXHR && jqXHR.statusText ? jqXHR.statusText : gettext("No answer from OctoPrint");
    }

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
        self.heatersOff = ko.observable(false);
        self.heaterActionIn = ko.observable(null);
        self.nativePending = ko.observable(false);
        self.requesting = ko.observable(false);

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
                    return self.printerState.isPrinting()
                        ? gettext("Printing")
                        : gettext("Not printing");
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
            return _.sprintf(gettext("since %(time)s"), {time: clock(self.since())});
        });
        self.isActive = ko.pureComputed(function () {
            return self.state() !== "idle" && self.state() !== "unknown";
        });
        self.whoText = ko.pureComputed(function () {
            return self.isActive() ? whoFrom(self.source()) : null;
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

        self.fromState = function (data) {
            if (!data) return;
            self.state(data.state || "unknown");
            self.since(data.since || null);
            self.reason(data.reason || null);
            self.source(data.source || null);
            self.warnings(data.warnings || []);
            self.error(data.error || null);
            self.heatersOff(!!data.heaters_off);
            self.heaterActionIn(
                data.heater_action_in === undefined ? null : data.heater_action_in
            );
            self.nativePending(!!data.native_pause_pending);
        };

        self._fromData = function (data) {
            if (!data || !data.plugins || !data.plugins[PLUGIN]) return;
            self.fromState(data.plugins[PLUGIN]);
            // OctoPrint's own state line says "Printing" during a SafePause hold: say what is going on.
            if (self.isActive() && data.state && data.state.text) {
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
            return OctoPrint.simpleApiCommand(PLUGIN, command, {})
                .done(function (response) {
                    if (response && response.state) self.fromState(response.state);
                })
                .fail(function (jqXHR) {
                    new PNotify({
                        title: gettext("SafePause"),
                        text: escape(errorText(jqXHR)),
                        type: "error"
                    });
                })
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

        self._describe = function (data) {
            var parts = [];
            var who = whoFrom(data.source);
            if (who) parts.push(_.sprintf(gettext("Paused by %(who)s."), {who: escape(who)}));
            if (data.reason) {
                parts.push(_.sprintf(gettext("Reason: %(reason)s"), {reason: escape(data.reason)}));
            }
            return parts.join(" ");
        };

        self.onDataUpdaterPluginMessage = function (plugin, data) {
            if (plugin !== PLUGIN || !data) return;
            if (data.type === "paused") {
                // A pause this browser's user asked for needs no pop-up; anyone else's (another plugin,
                // another user, a script) does.
                var mine = self.loginState.username() && data.source === "user:" + self.loginState.username();
                if (!mine) {
                    new PNotify({
                        title: gettext("Print paused by SafePause"),
                        text: self._describe(data),
                        type: "notice",
                        hide: false
                    });
                }
            }
        };

        // OctoPrint's own Pause button during a SafePause pause: the plugin answers 409 with its state;
        // OctoPrint's view model ignores failures, so say why nothing happened.
        $(document).ajaxError(function (event, jqXHR, settings) {
            if (!jqXHR || jqXHR.status !== 409 || !settings || !/api\/job\/?$/.test(settings.url || "")) {
                return;
            }
            var body = jqXHR.responseJSON;
            if (!body || !body.safepause) return;
            self.fromState(body.safepause);
            var state = body.safepause.state;
            var text;
            if (state === "paused") {
                text = gettext("The print is already paused by SafePause. Use Resume in the SafePause panel to continue.");
            } else if (state === "pausing") {
                text = gettext("SafePause is pausing the print right now.");
            } else {
                text = gettext("SafePause is resuming or cancelling the print; try again in a moment.");
            }
            var details = self._describe(body.safepause);
            new PNotify({
                title: gettext("Already paused by SafePause"),
                text: details ? text + " " + details : text,
                type: "notice"
            });
        });
    }

    function SafePauseSettingsViewModel(parameters) {
        var self = this;

        self.settingsViewModel = parameters[0];
        self.sp = undefined; // settings.plugins.safepause, set before binding

        self.errors = ko.observable({});
        self.preview = ko.observable(null);
        self.previewError = ko.observable(null);
        self._subscription = undefined;
        self._sequence = 0;

        self.errorFor = function (name) {
            return self.errors()[name] || "";
        };
        self.hasErrors = ko.pureComputed(function () {
            return !_.isEmpty(self.errors());
        });

        self.previewPause = ko.pureComputed(function () {
            var preview = self.preview();
            return preview ? preview.pause.join("\n") : "";
        });
        self.previewResume = ko.pureComputed(function () {
            var preview = self.preview();
            return preview ? preview.resume.join("\n") : "";
        });
        self.previewWarnings = ko.pureComputed(function () {
            var preview = self.preview();
            return preview ? preview.warnings : [];
        });
        self.previewSource = ko.pureComputed(function () {
            var preview = self.preview();
            if (!preview) return "";
            var where = _.sprintf("X%(x)s Y%(y)s Z%(z)s", {
                x: preview.position.x === null ? "?" : preview.position.x,
                y: preview.position.y === null ? "?" : preview.position.y,
                z: preview.position.z === null ? "?" : preview.position.z
            });
            var text =
                preview.source === "pause"
                    ? gettext("For the current pause, at %(where)s, firmware %(flavour)s.")
                    : gettext(
                          "For a sample print paused at %(where)s on the printer profile %(profile)s, firmware %(flavour)s."
                      );
            return _.sprintf(text, {
                where: where,
                flavour: preview.flavour,
                profile: preview.profile || "-"
            });
        });

        self.onBeforeBinding = function () {
            self.sp = self.settingsViewModel.settings.plugins.safepause;
            self.values = ko
                .pureComputed(function () {
                    return ko.toJS(self.sp);
                })
                .extend({rateLimit: {timeout: 300, method: "notifyWhenChangesStop"}});
        };

        self.check = function (values) {
            var sequence = ++self._sequence;
            var current = function () {
                return sequence === self._sequence;
            };
            OctoPrint.simpleApiCommand(PLUGIN, "validate", {settings: values})
                .done(function (response) {
                    if (current()) self.errors(response.errors || {});
                })
                .fail(function (jqXHR) {
                    if (current()) self.previewError(errorText(jqXHR));
                });
            OctoPrint.simpleApiCommand(PLUGIN, "preview", {settings: values})
                .done(function (response) {
                    if (!current()) return;
                    self.preview(response);
                    self.previewError(null);
                })
                .fail(function (jqXHR) {
                    if (current()) self.previewError(errorText(jqXHR));
                });
        };

        self.onSettingsShown = function () {
            if (self._subscription) self._subscription.dispose();
            self._subscription = self.values.subscribe(self.check);
            self.check(self.values());
        };

        self.onSettingsHidden = function () {
            if (self._subscription) self._subscription.dispose();
            self._subscription = undefined;
            self._sequence++;
            self.errors({});
        };

        // Every browser gets the refusal; only the one that just saved shows it.
        self._savedAt = 0;
        self.onSettingsBeforeSave = function () {
            self._savedAt = Date.now();
        };

        self.onDataUpdaterPluginMessage = function (plugin, data) {
            if (plugin !== PLUGIN || !data || data.type !== "settings_errors") return;
            if (Date.now() - self._savedAt > 10000) return;
            var lines = _.map(_.values(data.errors || {}), escape);
            new PNotify({
                title: gettext("SafePause settings not saved"),
                text: lines.join("<br>"),
                type: "error",
                hide: false
            });
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseViewModel,
        dependencies: ["loginStateViewModel", "accessViewModel", "printerStateViewModel"],
        elements: ["#sidebar_plugin_safepause"]
    });
    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseSettingsViewModel,
        dependencies: ["settingsViewModel"],
        elements: ["#settings_plugin_safepause"]
    });
});
