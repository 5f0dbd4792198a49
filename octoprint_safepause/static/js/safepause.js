/*
 * SafePause in OctoPrint's web interface: the sidebar panel and the settings page.
 *
 * The live state arrives with OctoPrint's own current-data push (data.plugins.safepause, every 0.5 s,
 * from the plugin's octoprint.printer.additional_state_data hook) and events as plugin messages, so
 * no browser polls the REST API. Commands go to POST /api/plugin/safepause.
 *
 * A recoverable print (docs/recovery.md) is read from GET /api/plugin/safepause (`recovery`) when the
 * page starts, when the recovery_* plugin messages arrive and after PrintFailed / PrintCancelled /
 * PrintDone / Disconnected, never periodically (except every 2 s while the server is still analysing
 * the file).
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

        // ------------------------------------------------------------------ recovery of a print that died

        self.recovery = ko.observable(null); // GET's `recovery` for the default choices, or null
        self.recoveryLoading = ko.observable(false);
        self.recoveryDialogOpen = ko.observable(false);
        self.recPosition = ko.observable("lost"); // "lost" | "kept"
        self.recStart = ko.observable("position"); // "position" | "layer"
        self.recPrelude = ko.observable("");
        self.recPreview = ko.observable(null); // GET's `recovery` for the dialog's choices
        self.recPreviewLoading = ko.observable(false);
        self.recError = ko.observable(null);
        self.recRequesting = ko.observable(false);
        self._recoverySequence = 0;
        self._previewSequence = 0;
        self._recoveryTimer = undefined;

        self.canLook = ko.pureComputed(function () {
            var permissions = self.access.permissions;
            return (
                self.loginState.isUser() &&
                self.loginState.hasAnyPermission(permissions.STATUS, permissions.PLUGIN_SAFEPAUSE_CONTROL)
            );
        });

        self.hasRecovery = ko.pureComputed(function () {
            return !!self.recovery();
        });
        self.recoveryAnalysing = ko.pureComputed(function () {
            var rec = self.recovery();
            return !!rec && rec.status === "analysing";
        });
        self.recoveryFile = ko.pureComputed(function () {
            var rec = self.recovery();
            return rec ? rec.name || rec.path : "";
        });
        self.recoveryPositionText = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec) return "";
            if (rec.progress === undefined || rec.progress === null) {
                return _.sprintf(gettext("byte %(pos)s"), {pos: rec.pos});
            }
            return _.sprintf(gettext("byte %(pos)s of %(size)s (%(percent)s%%)"), {
                pos: rec.pos,
                size: rec.size,
                percent: (rec.progress * 100).toFixed(1)
            });
        });
        self.recoveryLayerText = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec || rec.layer_z === undefined || rec.layer_z === null) return "";
            return _.sprintf(gettext("Z %(z)s mm"), {z: rec.layer_z});
        });
        self.recoveryDateText = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec || !rec.date) return "";
            return moment.unix(rec.date).format("YYYY-MM-DD HH:mm:ss");
        });
        self.recoveryWhyText = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec) return "";
            switch (rec.source) {
                case "octoprint":
                    return gettext("The print failed or was cancelled, or the connection to the printer was lost.");
                case "safepause":
                    return gettext("OctoPrint or its computer stopped while printing.");
                case "hold":
                    return gettext("A SafePause pause ended by a disconnect, an error or a cancel.");
                default:
                    return "";
            }
        });
        self.recoveryWarnings = ko.pureComputed(function () {
            var rec = self.recovery();
            return rec && rec.warnings ? rec.warnings : [];
        });
        self.recoveryInvalid = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec) return null;
            if (!rec.valid) return rec.error || gettext("This print cannot be recovered.");
            return null;
        });
        self.printerReady = ko.pureComputed(function () {
            var ps = self.printerState;
            return ps.isOperational() && ps.isReady() && !ps.isPrinting() && !ps.isPaused() && !ps.isPausing();
        });
        self.enableRecover = ko.pureComputed(function () {
            var rec = self.recovery();
            return (
                self.canControl() &&
                !self.recRequesting() &&
                !!rec &&
                rec.valid &&
                rec.status === "ready" &&
                self.printerReady()
            );
        });
        self.enableDiscard = ko.pureComputed(function () {
            return self.canControl() && !self.recRequesting() && self.hasRecovery();
        });
        self.recoverHint = ko.pureComputed(function () {
            var rec = self.recovery();
            if (!rec || !self.canControl() || !rec.valid || rec.status !== "ready") return "";
            if (!self.printerReady()) {
                return gettext("Connect the printer and finish or cancel any print to recover.");
            }
            return "";
        });

        self.recPositionKept = ko.pureComputed(function () {
            return self.recPosition() === "kept";
        });
        self.recPreviewWarnings = ko.pureComputed(function () {
            var rec = self.recPreview();
            return rec && rec.warnings ? rec.warnings : [];
        });
        self.recPreludeError = ko.pureComputed(function () {
            var rec = self.recPreview();
            return rec && rec.prelude_error ? rec.prelude_error : null;
        });
        self.recStartLine = ko.pureComputed(function () {
            var rec = self.recPreview();
            return rec && rec.line ? rec.line : "";
        });
        self.recPreludeLines = function () {
            return _.filter(
                _.map(self.recPrelude().split("\n"), function (line) {
                    return line.trim();
                }),
                function (line) {
                    return line.length > 0;
                }
            );
        };
        self.enableConfirm = ko.pureComputed(function () {
            var rec = self.recPreview();
            return (
                self.enableRecover() &&
                !self.recPreviewLoading() &&
                !!rec &&
                rec.valid &&
                rec.status === "ready" &&
                !rec.prelude_error &&
                self.recPrelude().trim().length > 0
            );
        });

        self._getRecovery = function (params) {
            var url = OctoPrint.getSimpleApiUrl(PLUGIN);
            if (params) url += "?" + $.param(params);
            return OctoPrint.get(url);
        };

        self.fetchRecovery = function () {
            if (!self.canLook()) {
                self.recovery(null);
                return;
            }
            var sequence = ++self._recoverySequence;
            if (self._recoveryTimer) {
                clearTimeout(self._recoveryTimer);
                self._recoveryTimer = undefined;
            }
            self.recoveryLoading(true);
            self._getRecovery()
                .done(function (response) {
                    if (sequence !== self._recoverySequence) return;
                    var rec = response ? response.recovery || null : null;
                    self.recovery(rec);
                    if (rec && rec.status === "analysing") {
                        self._recoveryTimer = setTimeout(self.fetchRecovery, 2000);
                    }
                    if (!rec && self.recoveryDialogOpen()) self.hideRecoveryDialog();
                })
                .always(function () {
                    if (sequence === self._recoverySequence) self.recoveryLoading(false);
                });
        };

        self.fetchPreview = function () {
            var sequence = ++self._previewSequence;
            self.recPreviewLoading(true);
            self.recError(null);
            self._getRecovery({position_kept: self.recPositionKept() ? "true" : "false", start: self.recStart()})
                .done(function (response) {
                    if (sequence !== self._previewSequence) return;
                    var rec = response ? response.recovery || null : null;
                    self.recPreview(rec);
                    if (rec && rec.status === "analysing") {
                        setTimeout(function () {
                            if (sequence === self._previewSequence && self.recoveryDialogOpen()) self.fetchPreview();
                        }, 2000);
                        return;
                    }
                    self.recPrelude(rec && rec.prelude ? rec.prelude.join("\n") : "");
                })
                .fail(function (jqXHR) {
                    if (sequence === self._previewSequence) self.recError(errorText(jqXHR));
                })
                .always(function () {
                    if (sequence === self._previewSequence) self.recPreviewLoading(false);
                });
        };
        self.recPosition.subscribe(function () {
            if (self.recoveryDialogOpen()) self.fetchPreview();
        });
        self.recStart.subscribe(function () {
            if (self.recoveryDialogOpen()) self.fetchPreview();
        });

        self._dialog = function () {
            return $("#safepause_recovery_dialog");
        };
        self.showRecoveryDialog = function () {
            if (!self.enableRecover()) return;
            self.recError(null);
            self.recPreview(null);
            self.recPrelude("");
            self.recoveryDialogOpen(true);
            // the defaults of the server: position lost, from the recorded position
            self.recPosition("lost");
            self.recStart("position");
            self.fetchPreview();
            self._dialog().modal("show");
        };
        self.hideRecoveryDialog = function () {
            self._dialog().modal("hide");
        };

        self.confirmRecovery = function () {
            if (!self.enableConfirm()) return;
            self.recRequesting(true);
            self.recError(null);
            OctoPrint.simpleApiCommand(PLUGIN, "recover", {
                position_kept: self.recPositionKept(),
                start: self.recStart(),
                prelude: self.recPreludeLines()
            })
                .done(function () {
                    self.hideRecoveryDialog();
                    self.recovery(null);
                    new PNotify({
                        title: gettext("SafePause"),
                        text: gettext("The print is being recovered."),
                        type: "success"
                    });
                })
                .fail(function (jqXHR) {
                    self.recError(errorText(jqXHR));
                })
                .always(function () {
                    self.recRequesting(false);
                    self.fetchRecovery();
                });
        };

        self.discardRecovery = function () {
            showConfirmationDialog({
                message: gettext(
                    "This forgets the print that stopped: it can no longer be recovered."
                ),
                cancel: gettext("No, keep it"),
                proceed: gettext("Yes, discard it"),
                onproceed: function () {
                    self.recRequesting(true);
                    OctoPrint.simpleApiCommand(PLUGIN, "discard", {})
                        .fail(function (jqXHR) {
                            new PNotify({
                                title: gettext("SafePause"),
                                text: escape(errorText(jqXHR)),
                                type: "error"
                            });
                        })
                        .always(function () {
                            self.recRequesting(false);
                            self.fetchRecovery();
                        });
                },
                nofade: true
            });
        };

        self.onStartupComplete = function () {
            var dialog = self._dialog();
            // out of the sidebar's collapsible panel: a modal must sit in the page's body
            dialog.appendTo("body");
            dialog.on("hidden", function (event) {
                if (event.target === dialog[0]) {
                    self.recoveryDialogOpen(false);
                    self._previewSequence++;
                }
            });
            self.fetchRecovery();
        };
        self.onUserLoggedIn = function () {
            self.fetchRecovery();
        };
        self.onUserLoggedOut = function () {
            self.recovery(null);
        };
        self.onEventPrintFailed = self.fetchRecovery;
        self.onEventPrintCancelled = self.fetchRecovery;
        self.onEventPrintDone = self.fetchRecovery;
        self.onEventDisconnected = self.fetchRecovery;

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
            if (
                data.type === "recovery_available" ||
                data.type === "recovered" ||
                data.type === "recovery_discarded"
            ) {
                self.fetchRecovery();
                return;
            }
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
            // Refused settings come back as 400 with `errors` by field (and, for preview, the preview).
            OctoPrint.simpleApiCommand(PLUGIN, "validate", {settings: values})
                .done(function (response) {
                    if (current()) self.errors(response.errors || {});
                })
                .fail(function (jqXHR) {
                    if (!current()) return;
                    var body = jqXHR.responseJSON;
                    if (body && body.errors) self.errors(body.errors);
                    else self.previewError(errorText(jqXHR));
                });
            OctoPrint.simpleApiCommand(PLUGIN, "preview", {settings: values})
                .done(function (response) {
                    if (!current()) return;
                    self.preview(response);
                    self.previewError(null);
                })
                .fail(function (jqXHR) {
                    if (!current()) return;
                    var body = jqXHR.responseJSON;
                    if (body && body.pause) {
                        self.preview(body);
                        self.previewError(null);
                    } else {
                        self.previewError(errorText(jqXHR));
                    }
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
