/*
 * "Resume a file from a height...": any local G-code file started from one of its layers (docs/recovery.md),
 * for a print that died without a record or was cancelled. A button in the SafePause sidebar and its
 * dialog.
 *
 * The files come from OctoPrint's own file list (filesViewModel), the layers and the prelude of a layer
 * from GET /api/plugin/safepause?path=...[&z=...] (`from_height`; polled every 2 s while the server is
 * still analysing the file, like the Recover dialog), and Confirm sends the `recover` command with
 * path and z. The printer must have kept its coordinates (position_kept: the server refuses anything
 * else from a height), which the dialog says.
 */
$(function () {
    var SP = window.SafePause;

    function SafePauseHeightViewModel(parameters) {
        var self = this;

        self.sidebar = parameters[0];
        self.loginState = parameters[1];
        self.access = parameters[2];
        self.printerState = parameters[3];
        self.filesViewModel = parameters[4];

        // the same rules as the Recover button: who may control prints, the printer idle
        self.canControl = self.sidebar.canControl;
        self.printerReady = ko.pureComputed(function () {
            var ps = self.printerState;
            return ps.isOperational() && ps.isReady() && !ps.isPrinting() && !ps.isPaused() && !ps.isPausing();
        });
        self.showButton = ko.pureComputed(function () {
            return self.canControl() && self.printerReady();
        });
        // The server takes a prelude of the user's own only with OctoPrint's CONTROL (403 otherwise);
        // without it the built one is sent unchanged, so the text is shown but not editable.
        self.canEditGcode = ko.pureComputed(function () {
            return self.loginState.hasPermission(self.access.permissions.CONTROL);
        });

        self.dialogOpen = ko.observable(false);
        self.path = ko.observable(undefined); // the chosen file's storage path
        self.file = ko.observable(null); // GET's `from_height` without z: the file's layers
        self.fileLoading = ko.observable(false);
        self.layerIndex = ko.observable(undefined); // index into file().layers
        self.preview = ko.observable(null); // GET's `from_height` with the chosen layer's z
        self.previewLoading = ko.observable(false);
        self.prelude = ko.observable("");
        self.error = ko.observable(null);
        self.requesting = ko.observable(false);
        // the selects' first entries (here, not in the template: a translation may hold a quote)
        self.fileCaption = gettext("Choose a local file...");
        self.layerCaption = gettext("Choose a layer...");
        self._fileSequence = 0;
        self._previewSequence = 0;

        // ------------------------------------------------------------------ the files

        // Local machine code files of OctoPrint's file list (a tree: folders hold `children`).
        self.localFiles = ko.pureComputed(function () {
            var found = [];
            var walk = function (items) {
                _.each(items || [], function (item) {
                    if (item.type === "folder") {
                        walk(item.children);
                    } else if (item.type === "machinecode" && item.origin === "local") {
                        found.push({path: item.path, text: item.path});
                    }
                });
            };
            walk(self.filesViewModel.allItems());
            return _.sortBy(found, "path");
        });

        self.fileAnalysing = ko.pureComputed(function () {
            var file = self.file();
            return !!file && file.status === "analysing";
        });

        // ------------------------------------------------------------------ the layers

        self.layers = ko.pureComputed(function () {
            var file = self.file();
            if (!file || file.status !== "ready") return [];
            return _.map(file.layers, function (layer, index) {
                return {
                    index: index,
                    z: layer.z,
                    pos: layer.pos,
                    progress: layer.progress,
                    text: _.sprintf(gettext("Layer %(number)s: Z %(z)s mm (%(percent)s%%)"), {
                        number: index + 1,
                        z: layer.z,
                        percent: (layer.progress * 100).toFixed(1)
                    })
                };
            });
        });
        self.layersText = ko.pureComputed(function () {
            var layers = self.layers();
            if (!layers.length) return "";
            return _.sprintf(gettext("%(count)s layers, the last at Z %(z)s mm"), {
                count: layers.length,
                z: layers[layers.length - 1].z
            });
        });
        self.noLayers = ko.pureComputed(function () {
            var file = self.file();
            return !!file && file.status === "ready" && !file.layers.length;
        });
        self._layerAt = function (index) {
            return index === undefined || index === null ? null : self.layers()[index] || null;
        };
        self.layer = ko.pureComputed(function () {
            return self._layerAt(self.layerIndex());
        });

        // ------------------------------------------------------------------ the chosen layer's preview

        self.previewReady = ko.pureComputed(function () {
            var preview = self.preview();
            return !!preview && preview.status === "ready" && preview.layer_z !== undefined;
        });
        self.previewAnalysing = ko.pureComputed(function () {
            var preview = self.preview();
            return !!preview && preview.status === "analysing";
        });
        self.layerText = ko.pureComputed(function () {
            var preview = self.preview();
            if (!self.previewReady()) return "";
            return _.sprintf(gettext("Z %(z)s mm, byte %(pos)s of %(size)s (%(percent)s%%)"), {
                z: preview.layer_z,
                pos: preview.pos,
                size: preview.size,
                percent: (preview.progress * 100).toFixed(1)
            });
        });
        // what must already stand on the bed: the highest deposit before the layer
        self.partText = ko.pureComputed(function () {
            var preview = self.preview();
            if (!self.previewReady() || preview.max_z === undefined || preview.max_z === null) return "";
            return _.sprintf(gettext("the part up to Z %(z)s mm"), {z: preview.max_z});
        });
        self.startLine = ko.pureComputed(function () {
            var preview = self.preview();
            return self.previewReady() && preview.line ? preview.line : "";
        });
        self.preludeError = ko.pureComputed(function () {
            var preview = self.preview();
            return self.previewReady() && preview.prelude_error ? preview.prelude_error : null;
        });
        self.previewWarnings = ko.pureComputed(function () {
            var preview = self.preview();
            return preview && preview.warnings ? preview.warnings : [];
        });
        self.preludeLines = function () {
            return SP.lines(self.prelude());
        };
        self.confirmHint = ko.pureComputed(function () {
            if (!self.printerReady()) {
                return gettext("Connect the printer and finish or cancel any print first.");
            }
            return "";
        });
        self.enableConfirm = ko.pureComputed(function () {
            return (
                self.canControl() &&
                self.printerReady() &&
                !self.requesting() &&
                !self.previewLoading() &&
                self.previewReady() &&
                !self.preludeError() &&
                self.prelude().trim().length > 0
            );
        });

        // ------------------------------------------------------------------ talking to the server

        self.fetchFile = function () {
            var sequence = ++self._fileSequence;
            var path = self.path();
            self._previewSequence++; // a preview of the previous file must not land
            self.file(null);
            self.layerIndex(undefined);
            self.preview(null);
            self.prelude("");
            self.error(null);
            if (!path) {
                self.fileLoading(false);
                return;
            }
            self.fileLoading(true);
            SP.getUntilAnalysed(
                {path: path},
                function (response) {
                    return response.from_height;
                },
                function () {
                    return sequence === self._fileSequence && self.dialogOpen();
                },
                function (file) {
                    self.file(file);
                    if (!file || file.status !== "analysing") self.fileLoading(false);
                },
                function (jqXHR) {
                    self.fileLoading(false);
                    self.error(SP.errorText(jqXHR));
                }
            );
        };

        self.fetchPreview = function () {
            var sequence = ++self._previewSequence;
            var path = self.path();
            // not self.layer(): from layerIndex's subscription that computed may not have updated yet
            var layer = self._layerAt(self.layerIndex());
            self.preview(null);
            self.prelude("");
            self.error(null);
            if (!path || !layer) {
                self.previewLoading(false);
                return;
            }
            self.previewLoading(true);
            SP.getUntilAnalysed(
                {path: path, z: layer.z, position_kept: "true"},
                function (response) {
                    return response.from_height;
                },
                function () {
                    return sequence === self._previewSequence && self.dialogOpen();
                },
                function (preview) {
                    self.preview(preview);
                    if (preview && preview.status === "analysing") return;
                    self.prelude(preview && preview.prelude ? preview.prelude.join("\n") : "");
                    self.previewLoading(false);
                },
                function (jqXHR) {
                    self.previewLoading(false);
                    self.error(SP.errorText(jqXHR));
                }
            );
        };

        self.path.subscribe(function () {
            if (self.dialogOpen()) self.fetchFile();
        });
        self.layerIndex.subscribe(function () {
            if (self.dialogOpen()) self.fetchPreview();
        });

        // ------------------------------------------------------------------ the dialog

        self._dialog = function () {
            return $("#safepause_height_dialog");
        };
        self.showDialog = function () {
            if (!self.showButton()) return;
            if (self.filesViewModel.allItems() === undefined) self.filesViewModel.requestData();
            self.path(undefined); // before the dialog counts as open: no fetch from the subscription
            self.requesting(false);
            self.dialogOpen(true);
            self.fetchFile(); // clears what an earlier opening showed
            self._dialog().modal("show");
        };
        self.hideDialog = function () {
            self._dialog().modal("hide");
        };

        self.confirm = function () {
            if (!self.enableConfirm()) return;
            var preview = self.preview();
            var parameters = {path: preview.path, z: self.layer().z, position_kept: true};
            if (self.canEditGcode()) parameters.prelude = self.preludeLines();
            self.requesting(true);
            self.error(null);
            SP.command("recover", parameters)
                .done(function () {
                    self.hideDialog();
                    new PNotify({
                        title: gettext("SafePause"),
                        text: _.sprintf(gettext("%(file)s is being printed from Z %(z)s mm."), {
                            file: SP.escape(preview.name || preview.path),
                            z: preview.layer_z
                        }),
                        type: "success"
                    });
                })
                .fail(function (jqXHR) {
                    self.error(SP.errorText(jqXHR));
                })
                .always(function () {
                    self.requesting(false);
                });
        };

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
                    self._previewSequence++;
                }
            });
        };
        self.onUserLoggedOut = function () {
            if (self.dialogOpen()) self.hideDialog();
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseHeightViewModel,
        dependencies: [
            "safePauseViewModel",
            "loginStateViewModel",
            "accessViewModel",
            "printerStateViewModel",
            "filesViewModel"
        ],
        elements: ["#safepause_height_panel", "#safepause_height_dialog"]
    });
});
