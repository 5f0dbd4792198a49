/*
 * SafePause in OctoPrint's web interface, the shared part (loaded first, see get_assets): the plugin's
 * id, the text helpers and the one place that talks to the plugin's REST API. The view models
 * (safepause_sidebar.js, safepause_recovery.js, safepause_native.js, safepause_settings.js) reach it
 * as window.SafePause.
 */
(function (global) {
    var PLUGIN = "safepause";

    function escape(text) {
        return _.escape(text === undefined || text === null ? "" : String(text));
    }

    function clock(epochSeconds) {
        return moment.unix(epochSeconds).format("HH:mm");
    }

    // "user:admin" -> "admin", "plugin:detector" -> "plugin detector", "api" -> "REST API", "file" -> "the
    // print file" (its M0 / @pause), "printer" -> "the printer" (its //action:pause), "schedule" -> "a
    // scheduled stop" (docs/scheduled-stops.md)
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
        if (source === "file") return gettext("the print file");
        if (source === "printer") return gettext("the printer");
        if (source === "schedule") return gettext("a scheduled stop");
        if (source === "octoprint") return "OctoPrint";
        return source;
    }

    function errorText(jqXHR) {
        if (jqXHR && jqXHR.responseJSON && jqXHR.responseJSON.error) {
            return jqXHR.responseJSON.error;
        }
        return jqXHR && jqXHR.statusText ? jqXHR.statusText : gettext("No answer from OctoPrint");
    }

    // Who paused and why, from a status (or a `paused` message), as HTML for a pop-up.
    function describe(data) {
        var parts = [];
        var who = whoFrom(data.source);
        if (who) parts.push(_.sprintf(gettext("Paused by %(who)s."), {who: escape(who)}));
        if (data.reason) {
            parts.push(_.sprintf(gettext("Reason: %(reason)s"), {reason: escape(data.reason)}));
        }
        return parts.join(" ");
    }

    // A refused or failed request, as a pop-up.
    function notifyError(jqXHR) {
        new PNotify({
            title: gettext("SafePause"),
            text: escape(errorText(jqXHR)),
            type: "error"
        });
    }

    // POST /api/plugin/safepause {"command": name, ...parameters}: every command the page sends.
    function command(name, parameters) {
        return OctoPrint.simpleApiCommand(PLUGIN, name, parameters || {});
    }

    // GET /api/plugin/safepause[?query]: the status and the recoverable print (`recovery`).
    function get(query) {
        var url = OctoPrint.getSimpleApiUrl(PLUGIN);
        if (query) url += "?" + $.param(query);
        return OctoPrint.get(url);
    }

    // the lines typed into a text area, trimmed, blank ones left out (G-code to send)
    function lines(text) {
        return _.filter(
            _.map(String(text || "").split("\n"), function (line) {
                return line.trim();
            }),
            function (line) {
                return line.length > 0;
            }
        );
    }

    var ANALYSING_RETRY = 1000; // ms between two asks while the server analyses a file

    // GET with `query`, asked again every second while the part `pick(response)` of the answer says the
    // file is still being analysed. `answer(part)` gets every answer (the part, or null) as long as
    // `wanted()` (another file chosen or the dialog closed: dropped), `fail(jqXHR)` a refusal.
    function getUntilAnalysed(query, pick, wanted, answer, fail) {
        var ask = function () {
            get(query)
                .done(function (response) {
                    if (!wanted()) return;
                    var part = response ? pick(response) || null : null;
                    answer(part);
                    if (part && part.status === "analysing") {
                        setTimeout(function () {
                            if (wanted()) ask();
                        }, ANALYSING_RETRY);
                    }
                })
                .fail(function (jqXHR) {
                    if (wanted()) fail(jqXHR);
                });
        };
        ask();
    }

    global.SafePause = {
        PLUGIN: PLUGIN,
        escape: escape,
        clock: clock,
        whoFrom: whoFrom,
        errorText: errorText,
        describe: describe,
        notifyError: notifyError,
        command: command,
        get: get,
        getUntilAnalysed: getUntilAnalysed,
        lines: lines,
        ANALYSING_RETRY: ANALYSING_RETRY
    };
})(window);
