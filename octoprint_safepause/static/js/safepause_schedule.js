/*
 * Scheduled stops (docs/scheduled-stops.md): a pause, a filament change or a few lines of G-code before a
 * planned layer.
 *
 * - The running print's stops: a section of the SafePause sidebar. They arrive with the sidebar's push
 *   (data.plugins.safepause.stops, OctoPrint's current data every 0.5 s); its add form sends the
 *   `schedule` command without a path (at a height, a layer, the next layer, every N layers), each
 *   stop's remove button `unschedule`.
 * - A file's own stops: a "Pause at height..." button on every local machine code file of OctoPrint's
 *   file list, put into the list's Knockout template (#files_template_machinecode) before OctoPrint
 *   binds it; its dialog lists the file's layers and stops from GET ?schedule=<path> (asked again every
 *   second while the server is still analysing the file) and sends `schedule` / `unschedule` with the
 *   path.
 * - A stop reached: the `stop_reached` plugin message, as a pop-up.
 *
 * Bound to its own part of the sidebar template and to the dialog; the sidebar's view model (who may
 * control) is a dependency.
 */
$(function () {
    var SP = window.SafePause;
    var ANALYSING_TRIES = 60; // a stop on a print whose layers are still being read: asked again so often
    var FILE_BUTTON = "safepause-schedule-file"; // data-test-id of the file list's button

    // ------------------------------------------------------------------ texts of a stop

    function actionText(action) {
        switch (action) {
            case "filament_change":
                return gettext("Filament change");
            case "gcode":
                return gettext("G-code");
            default:
                return gettext("Pause");
        }
    }

    function zText(z) {
        return Number(z).toFixed(2);
    }

    function known(value) {
        return value !== undefined && value !== null;
    }

    // where a stop stops: its next occurrence when the server resolved it, else what was asked
    function whereText(stop) {
        var at = stop.at || {};
        var resolved = known(stop.layer) && known(stop.z);
        if (known(at.every)) {
            if (!resolved) return _.sprintf(gettext("every %(every)s layers"), {every: at.every});
            return _.sprintf(gettext("every %(every)s layers: next layer %(layer)s (Z %(z)s)"), {
                every: at.every,
                layer: stop.layer,
                z: zText(stop.z)
            });
        }
        if (resolved) {
            return _.sprintf(gettext("layer %(layer)s (Z %(z)s)"), {layer: stop.layer, z: zText(stop.z)});
        }
        if (known(at.z)) return _.sprintf(gettext("at Z %(z)s mm"), {z: zText(at.z)});
        if (known(at.layer)) return _.sprintf(gettext("layer %(layer)s"), {layer: at.layer});
        if (at.next_layer) return gettext("the next layer");
        return "";
    }

    function etaText(seconds) {
        var minutes = Math.round(seconds / 60);
        if (minutes < 1) return gettext("less than a minute");
        if (minutes < 60) return _.sprintf(gettext("%(minutes)s min"), {minutes: minutes});
        return _.sprintf(gettext("%(hours)s h %(minutes)s min"), {
            hours: Math.floor(minutes / 60),
            minutes: (minutes % 60 < 10 ? "0" : "") + (minutes % 60)
        });
    }

    // how far away it is on the running print (layers_away, eta); "" when the server does not know
    function distanceText(stop) {
        var parts = [];
        if (known(stop.layers_away)) {
            if (stop.layers_away <= 0) parts.push(gettext("at this layer"));
            else if (stop.layers_away === 1) parts.push(gettext("in 1 layer"));
            else parts.push(_.sprintf(gettext("in %(count)s layers"), {count: stop.layers_away}));
        }
        if (known(stop.eta)) {
            parts.push(_.sprintf(gettext("about %(time)s"), {time: etaText(stop.eta)}));
        }
        return parts.join(", ");
    }

    function stopView(stop) {
        return {
            id: stop.id,
            action: stop.action,
            actionText: actionText(stop.action),
            whereText: whereText(stop),
            distanceText: distanceText(stop),
            message: stop.message || "",
            // a file's stop on the running print: removing it here removes it from the file too
            scopeText: stop.scope === "file" ? gettext("kept with the file") : "",
            removeTitle:
                stop.scope === "file" ? gettext("Remove this stop, from the file too") : gettext("Remove this stop"),
            gcodeText: stop.action === "gcode" ? (stop.gcode || []).join(" / ") : ""
        };
    }

    // "Scheduled pause at layer 26 reached" etc., the pop-up's text when the stop has no message
    function reachedText(data) {
        var stop = data.stop || {};
        var action = data.action || stop.action;
        if (!known(stop.layer)) {
            switch (action) {
                case "filament_change":
                    return gettext("Scheduled filament change reached");
                case "gcode":
                    return gettext("Scheduled G-code sent");
                default:
                    return gettext("Scheduled pause reached");
            }
        }
        var layer = {layer: stop.layer};
        switch (action) {
            case "filament_change":
                return _.sprintf(gettext("Scheduled filament change at layer %(layer)s reached"), layer);
            case "gcode":
                return _.sprintf(gettext("Scheduled G-code at layer %(layer)s sent"), layer);
            default:
                return _.sprintf(gettext("Scheduled pause at layer %(layer)s reached"), layer);
        }
    }

    // ------------------------------------------------------------------ what to do, for both forms

    function StopAction(canEditGcode) {
        var self = this;
        self.action = ko.observable("pause");
        self.gcode = ko.observable("");
        self.message = ko.observable("");
        // G-code lines need OctoPrint's CONTROL (the server answers 403 without it): only offered with it
        self.actions = ko.pureComputed(function () {
            var actions = [
                {value: "pause", text: gettext("Pause")},
                {value: "filament_change", text: gettext("Filament change")}
            ];
            if (canEditGcode()) actions.push({value: "gcode", text: gettext("G-code")});
            return actions;
        });
        self.isGcode = ko.pureComputed(function () {
            return self.action() === "gcode";
        });
        self.gcodeLines = function () {
            return SP.lines(self.gcode());
        };
        self.ready = ko.pureComputed(function () {
            return !self.isGcode() || self.gcodeLines().length > 0;
        });
        // the command's parameters besides `at` and `path`
        self.parameters = function () {
            var parameters = {action: self.action()};
            if (self.isGcode()) parameters.gcode = self.gcodeLines();
            var message = self.message().trim();
            if (message) parameters.message = message;
            return parameters;
        };
        self.reset = function () {
            self.action("pause");
            self.gcode("");
            self.message("");
        };
        canEditGcode.subscribe(function (allowed) {
            if (!allowed && self.isGcode()) self.action("pause");
        });
    }

    function SafePauseScheduleViewModel(parameters) {
        var self = this;

        self.sidebar = parameters[0];
        self.loginState = parameters[1];
        self.access = parameters[2];
        self.printerState = parameters[3];

        self.canControl = self.sidebar.canControl;
        self.canEditGcode = ko.pureComputed(function () {
            return self.loginState.hasPermission(self.access.permissions.CONTROL);
        });

        // ------------------------------------------------------------------ the running print's stops

        self.stops = ko.observableArray([]); // the status's `stops`
        self.printActive = ko.pureComputed(function () {
            var ps = self.printerState;
            return !!(ps.isPrinting() || ps.isPaused() || ps.isPausing());
        });
        self.showStops = ko.pureComputed(function () {
            return self.canControl() && self.printActive();
        });
        self.stopViews = ko.pureComputed(function () {
            return _.map(self.stops(), stopView);
        });

        self.formOpen = ko.observable(false);
        self.kind = ko.observable("z"); // z | layer | next_layer | every
        self.value = ko.observable("");
        self.form = new StopAction(self.canEditGcode);
        self.formError = ko.observable(null);
        self.formWarning = ko.observable(null); // the answer's `warning`, once added
        self.requesting = ko.observable(false);
        self.kinds = [
            {value: "z", text: gettext("At height (mm)")},
            {value: "layer", text: gettext("At layer")},
            {value: "next_layer", text: gettext("At the next layer")},
            {value: "every", text: gettext("Every N layers")}
        ];
        self.needsValue = ko.pureComputed(function () {
            return self.kind() !== "next_layer";
        });
        self.valueStep = ko.pureComputed(function () {
            return self.kind() === "z" ? "0.01" : "1";
        });
        self.valueMin = ko.pureComputed(function () {
            return self.kind() === "z" ? "0" : "1";
        });
        self.valuePlaceholder = ko.pureComputed(function () {
            switch (self.kind()) {
                case "z":
                    return gettext("Height in mm");
                case "layer":
                    return gettext("Layer number");
                case "every":
                    return gettext("Number of layers");
                default:
                    return "";
            }
        });
        self.enableAdd = ko.pureComputed(function () {
            return (
                self.canControl() &&
                self.printActive() &&
                !self.requesting() &&
                self.form.ready() &&
                (!self.needsValue() || String(self.value()).trim().length > 0)
            );
        });
        self.kind.subscribe(function () {
            self.formError(null);
        });

        // `at` from the form, or null (and the reason in formError)
        self._at = function () {
            var kind = self.kind();
            if (kind === "next_layer") return {next_layer: true};
            var text = String(self.value()).trim();
            var number = Number(text);
            if (!text || !isFinite(number)) {
                self.formError(gettext("Enter a number."));
                return null;
            }
            if (kind === "z") return {z: number};
            if (Math.floor(number) !== number || number < 1) {
                self.formError(gettext("Enter a whole number of 1 or more."));
                return null;
            }
            return kind === "layer" ? {layer: number} : {every: number};
        };

        self._fromState = function (state) {
            if (!state) return;
            self.sidebar.fromState(state);
            self.stops(state.stops || []);
        };

        self.openForm = function () {
            self.formError(null);
            self.formWarning(null);
            self.formOpen(true);
        };
        self.closeForm = function () {
            self.formOpen(false);
            self.formError(null);
        };
        self.resetForm = function () {
            self.kind("z");
            self.value("");
            self.form.reset();
            self.formError(null);
            self.formWarning(null);
        };

        self.addStop = function () {
            if (!self.enableAdd()) return;
            self.formError(null);
            self.formWarning(null);
            var at = self._at();
            if (!at) return;
            var parameters = _.extend({at: at}, self.form.parameters());
            var tries = 0;
            self.requesting(true);
            var send = function () {
                SP.command("schedule", parameters)
                    .done(function (response) {
                        self.requesting(false);
                        if (!response) return;
                        self._fromState(response.state);
                        self.resetForm();
                        self.formOpen(false);
                        self.formWarning(response.warning || null);
                    })
                    .fail(function (jqXHR) {
                        var body = jqXHR ? jqXHR.responseJSON : null;
                        // a print that just started: its layers are still being read, ask again
                        if (body && body.analysing && ++tries < ANALYSING_TRIES && self.formOpen()) {
                            self.formError(gettext("Analysing the file..."));
                            setTimeout(send, SP.ANALYSING_RETRY);
                            return;
                        }
                        self.requesting(false);
                        self.formError(SP.errorText(jqXHR));
                    });
            };
            send();
        };

        self.removeStop = function (stop) {
            if (!self.canControl()) return;
            SP.command("unschedule", {id: stop.id})
                .done(function (response) {
                    if (response) self._fromState(response.state);
                })
                .fail(SP.notifyError);
        };

        self._fromData = function (data) {
            if (!data || !data.plugins || !data.plugins[SP.PLUGIN]) return;
            var stops = data.plugins[SP.PLUGIN].stops;
            self.stops(stops || []);
        };
        self.fromCurrentData = self._fromData;
        self.fromHistoryData = self._fromData;

        self.printActive.subscribe(function (active) {
            if (!active) {
                self.closeForm();
                self.resetForm();
            }
        });

        // ------------------------------------------------------------------ a file's stops (the dialog)

        self.dialogOpen = ko.observable(false);
        self.filePath = ko.observable(null);
        self.fileName = ko.observable("");
        self.schedule = ko.observable(null); // GET's `schedule`
        self.fileLoading = ko.observable(false);
        self.fileError = ko.observable(null);
        self.fileWarning = ko.observable(null); // the answer's `warning`: kept with the file, not this print
        self.fileLayer = ko.observable(undefined); // the chosen layer's number
        self.fileForm = new StopAction(self.canEditGcode);
        self.fileRequesting = ko.observable(false);
        self.layerCaption = gettext("Choose a layer...");
        self._fileSequence = 0;

        self.fileAnalysing = ko.pureComputed(function () {
            var schedule = self.schedule();
            return !!schedule && schedule.status === "analysing";
        });
        self.fileLayers = ko.pureComputed(function () {
            var schedule = self.schedule();
            if (!schedule || schedule.status !== "ready") return [];
            return _.map(schedule.layers || [], function (layer) {
                return {
                    layer: layer.layer,
                    text: _.sprintf(gettext("Layer %(number)s: Z %(z)s mm (%(percent)s%%)"), {
                        number: layer.layer,
                        z: layer.z,
                        percent: (layer.progress * 100).toFixed(1)
                    })
                };
            });
        });
        self.fileNoLayers = ko.pureComputed(function () {
            var schedule = self.schedule();
            return !!schedule && schedule.status === "ready" && !(schedule.layers || []).length;
        });
        self.fileStopViews = ko.pureComputed(function () {
            var schedule = self.schedule();
            return schedule ? _.map(schedule.stops || [], stopView) : [];
        });
        self.enableFileAdd = ko.pureComputed(function () {
            var layer = self.fileLayer();
            return (
                self.canControl() &&
                !self.fileRequesting() &&
                known(layer) &&
                layer !== "" &&
                self.fileForm.ready()
            );
        });

        // GET ?schedule=<path>, again every second while the server analyses the file
        self.fetchSchedule = function () {
            var sequence = ++self._fileSequence;
            var path = self.filePath();
            if (!path) return;
            self.fileLoading(true);
            SP.getUntilAnalysed(
                {schedule: path},
                function (response) {
                    return response.schedule;
                },
                function () {
                    return sequence === self._fileSequence && self.dialogOpen();
                },
                function (schedule) {
                    self.schedule(schedule);
                    if (!schedule || schedule.status !== "analysing") self.fileLoading(false);
                },
                function (jqXHR) {
                    self.fileLoading(false);
                    self.fileError(SP.errorText(jqXHR));
                }
            );
        };

        self.addFileStop = function () {
            if (!self.enableFileAdd()) return;
            var path = self.filePath();
            var parameters = _.extend(
                {at: {layer: Number(self.fileLayer())}, path: path},
                self.fileForm.parameters()
            );
            self.fileRequesting(true);
            self.fileError(null);
            self.fileWarning(null);
            SP.command("schedule", parameters)
                .done(function (response) {
                    if (response) {
                        self._fromState(response.state);
                        self.fileWarning(response.warning || null);
                    }
                    self.fileForm.reset();
                    self.fileLayer(undefined);
                    self.fetchSchedule();
                })
                .fail(function (jqXHR) {
                    self.fileError(SP.errorText(jqXHR));
                    var body = jqXHR ? jqXHR.responseJSON : null;
                    if (body && body.analysing) self.fetchSchedule(); // the layers are still being read
                })
                .always(function () {
                    self.fileRequesting(false);
                });
        };

        self.removeFileStop = function (stop) {
            if (!self.canControl()) return;
            self.fileError(null);
            SP.command("unschedule", {id: stop.id, path: self.filePath()})
                .done(function (response) {
                    if (response) self._fromState(response.state);
                    self.fetchSchedule();
                })
                .fail(function (jqXHR) {
                    self.fileError(SP.errorText(jqXHR));
                    self.fetchSchedule();
                });
        };

        self._dialog = function () {
            return $("#safepause_schedule_dialog");
        };
        // from the file list's button: `file` is the list's entry (origin, path, display, name)
        self.showFileDialog = function (file) {
            if (!file || file.origin !== "local" || !self.canControl()) return;
            self._fileSequence++; // an answer for the file shown before must not land
            self.filePath(file.path);
            self.fileName(file.display || file.name || file.path);
            self.schedule(null);
            self.fileError(null);
            self.fileWarning(null);
            self.fileLayer(undefined);
            self.fileForm.reset();
            self.fileRequesting(false);
            self.dialogOpen(true);
            self.fetchSchedule();
            self._dialog().modal("show");
        };
        self.hideFileDialog = function () {
            self._dialog().modal("hide");
        };

        // ------------------------------------------------------------------ OctoPrint's file list

        // OctoPrint 1.11 has no API for a file's extra buttons: the button goes into the list's template
        // (a <script type="text/html">) before OctoPrint binds the list. Its binding context there is the
        // file entry ($data) and $root the files view model; the click is taken below by delegation.
        self._injectFileButton = function () {
            var template = $("#files_template_machinecode");
            if (!template.length) return;
            var holder = $("<div></div>").html(template.text());
            var buttons = holder.find(".action-buttons").first();
            if (!buttons.length || buttons.find("[data-test-id=" + FILE_BUTTON + "]").length) return;
            var title = gettext("Pause at height...");
            var button = $('<div class="btn btn-mini safepause-file-schedule" role="link"></div>')
                .attr("data-test-id", FILE_BUTTON)
                .attr("title", title)
                .attr("aria-label", title)
                .attr(
                    "data-bind",
                    "visible: $data.origin === 'local' && $root.loginState.hasAnyPermissionKo(" +
                        "$root.access.permissions.PRINT, $root.access.permissions.PLUGIN_SAFEPAUSE_CONTROL)"
                )
                .append('<i class="fas fa-pause-circle"></i>');
            // before Load / Load and Print: those start something, this one plans
            var select = buttons.children(".btn-files-select").first();
            if (select.length) button.insertBefore(select);
            else buttons.append(button);
            template.text(holder.html());
        };
        self._injectFileButton();

        $(document).on("click", "[data-test-id=" + FILE_BUTTON + "]", function (event) {
            event.preventDefault();
            self.showFileDialog(ko.dataFor(this));
        });

        // ------------------------------------------------------------------ OctoPrint's callbacks

        self.onStartupComplete = function () {
            var dialog = self._dialog();
            // out of the sidebar's collapsible panel: a modal must sit in the page's body
            dialog.appendTo("body");
            dialog.on("hidden", function (event) {
                if (event.target === dialog[0]) {
                    // stops the polls of an analysing file
                    self.dialogOpen(false);
                    self._fileSequence++;
                }
            });
        };
        self.onUserLoggedOut = function () {
            if (self.dialogOpen()) self.hideFileDialog();
        };

        self.onDataUpdaterPluginMessage = function (plugin, data) {
            if (plugin !== SP.PLUGIN || !data || data.type !== "stop_reached") return;
            var stop = data.stop || {};
            var message = data.message || stop.message;
            var action = data.action || stop.action;
            var text = message ? message : reachedText(data);
            var file = data.file || stop.path;
            // with a message of its own, the standard text goes under it, with the file
            var details = [];
            if (message) details.push(reachedText(data));
            if (file) details.push(file);
            new PNotify({
                title: gettext("Scheduled stop"),
                text:
                    SP.escape(text) +
                    (details.length ? "<br><small>" + SP.escape(details.join(", ")) + "</small>" : ""),
                type: action === "gcode" ? "info" : "notice",
                // the printer waits for someone unless the stop only sent G-code
                hide: action === "gcode"
            });
            if (self.dialogOpen() && file === self.filePath()) self.fetchSchedule();
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseScheduleViewModel,
        dependencies: ["safePauseViewModel", "loginStateViewModel", "accessViewModel", "printerStateViewModel"],
        elements: ["#safepause_schedule_panel", "#safepause_schedule_dialog"]
    });
});
