/*
 * The SafePause settings page: every change is checked by the server as it is typed (the `validate`
 * and `preview` commands, 400 with `errors` by setting when refused), with the G-code a pause and a
 * resume would send; a save the server refused comes back as a settings_errors plugin message.
 */
$(function () {
    var SP = window.SafePause;

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
            SP.command("validate", {settings: values})
                .done(function (response) {
                    if (current()) self.errors(response.errors || {});
                })
                .fail(function (jqXHR) {
                    if (!current()) return;
                    var body = jqXHR.responseJSON;
                    if (body && body.errors) self.errors(body.errors);
                    else self.previewError(SP.errorText(jqXHR));
                });
            SP.command("preview", {settings: values})
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
                        self.previewError(SP.errorText(jqXHR));
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
            if (plugin !== SP.PLUGIN || !data || data.type !== "settings_errors") return;
            if (Date.now() - self._savedAt > 10000) return;
            var lines = _.map(_.values(data.errors || {}), SP.escape);
            new PNotify({
                title: gettext("SafePause settings not saved"),
                text: lines.join("<br>"),
                type: "error",
                hide: false
            });
        };
    }

    OCTOPRINT_VIEWMODELS.push({
        construct: SafePauseSettingsViewModel,
        dependencies: ["settingsViewModel"],
        elements: ["#settings_plugin_safepause"]
    });
});
