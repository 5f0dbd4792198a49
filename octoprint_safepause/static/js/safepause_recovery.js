/*
 * The recoverable print (docs/recovery.md) in the SafePause sidebar and its Recover dialog.
 *
 * Read from GET /api/plugin/safepause (`recovery`) when the page starts, when the recovery_* plugin
 * messages arrive and after PrintFailed / PrintCancelled / PrintDone / Disconnected, never
 * periodically (except every 2 s while the server is still analysing the file). The dialog asks the
 * same GET for the prelude of each choice and sends the `recover` command.
 *
 * Bound to its own part of the sidebar template and to the dialog; the sidebar's view model (who may
 * control) is a dependency.
 */
$(function () {
    var SP = window.SafePause;

    function SafePauseRecoveryViewModel(parameters) {
        var self = this;

        self.sidebar = parameters[0];
        self.loginState = parameters[1];
        self.access = parameters[2];
        self.printerState = parameters[3];

        self.canControl = self.sidebar.canControl;

        self.recovery = ko.observable(null); // GET's `recovery` for the default choices, or null
        self.recoveryLoading = ko.observable(false);
        self.recoveryDialogOpen = ko.observable(false);
        self.recPower = ko.observable("on"); // "on" (the printer stayed on) | "lost" (power loss)
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

        // ------------------------------------------------------------------ the Recover dialog

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
            return SP.lines(self.recPrelude());
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
            SP.get()
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
            SP.get({
                power_lost: self.recPower() === "lost" ? "true" : "false",
                position_kept: self.recPositionKept() ? "true" : "false",
                start: self.recStart()
            })
                .done(function (response) {
                    if (sequence !== self._previewSequence) return;
                    var rec = response ? response.recovery || null : null;
                    self.recPreview(rec);
                    self.touchOff(rec && rec.touch_off ? rec.touch_off : null);
                    if (rec && rec.status === "analysing") {
                        setTimeout(function () {
                            if (sequence === self._previewSequence && self.recoveryDialogOpen()) self.fetchPreview();
                        }, 2000);
                        return;
                    }
                    self.recPrelude(rec && rec.prelude ? rec.prelude.join("\n") : "");
                })
                .fail(function (jqXHR) {
                    if (sequence === self._previewSequence) self.recError(SP.errorText(jqXHR));
                })
                .always(function () {
                    if (sequence === self._previewSequence) self.recPreviewLoading(false);
                });
        };
        self.recPower.subscribe(function () {
            if (self.recoveryDialogOpen()) self.fetchPreview();
        });
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
            // the defaults of the server: the printer stayed on, position lost, from the recorded position
            self.recPower("on");
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
            SP.command("recover", {
                power_lost: self.recPower() === "lost",
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
                    self.recError(SP.errorText(jqXHR));
                })
                .always(function () {
                    self.recRequesting(false);
                    self.fetchRecovery();
                });
        };

        // ------------------------------------------------------------------ touch-off (power loss)

        self.touchOff = ko.observable(null); // the server's touch_off state while one is under way
        self.touchRequesting = ko.observable(false);
        self.touchSteps = [-1, -0.1, -0.05, 0.05, 0.1, 1];
        self.touchZ = ko.pureComputed(function () {
            var touch = self.touchOff();
            return touch ? "Z " + Number(touch.z).toFixed(2) + " mm" : "";
        });
        self._touch = function (data, onDone) {
            self.touchRequesting(true);
            self.recError(null);
            return SP.command("touch_off", data)
                .done(function (response) {
                    var touch = response ? response.touch_off : null;
                    self.touchOff(touch && touch.active ? touch : null);
                    if (onDone) onDone(touch);
                })
                .fail(function (jqXHR) {
                    self.recError(SP.errorText(jqXHR));
                })
                .always(function () {
                    self.touchRequesting(false);
                });
        };
        self.startTouchOff = function () {
            self._touch({action: "start"});
        };
        self.jogTouchOff = function (step) {
            self._touch({action: "jog", distance: step});
        };
        self.cancelTouchOff = function () {
            self._touch({action: "cancel"});
        };
        self.confirmTouchOff = function () {
            self._touch({action: "confirm"}, function () {
                self.hideRecoveryDialog();
                self.recovery(null);
                new PNotify({
                    title: gettext("SafePause"),
                    text: gettext("The print goes on with the next layer."),
                    type: "success"
                });
                self.fetchRecovery();
            });
        };
        self.touchStepText = function (step) {
            return (step > 0 ? "+" : "\u2212") + Math.abs(step) + " mm";
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
                    SP.command("discard")
                        .fail(SP.notifyError)
                        .always(function () {
                            self.recRequesting(false);
                            self.fetchRecovery();
                        });
                },
                nofade: true
            });
        };

        // ------------------------------------------------------------------ OctoPrint's callbacks

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

        self.onDataUpdaterPluginMessage = function (plugin, data) {
            if (plugin !== SP.PLUGIN || !data) return;
            if (
                data.type === "recovery_available" ||
                data.type === "recovered" ||
                data.type === "recovery_discarded"
            ) {
                self.fetchRecovery();
            }
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseRecoveryViewModel,
        dependencies: [
            "safePauseViewModel",
            "loginStateViewModel",
            "accessViewModel",
            "printerStateViewModel"
        ],
        elements: ["#safepause_recovery_panel", "#safepause_recovery_dialog"]
    });
});
