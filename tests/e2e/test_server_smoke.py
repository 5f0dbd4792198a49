"""Smoke test of the sandbox server: starts offline, loads the plugin, connects, uploads and prints."""

from __future__ import annotations

import re
import time

import pytest
import sandbox as sandbox_module

from .conftest import log_records, plugin_log_problems

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CORPUS_GCODE = sandbox_module.corpus.gcode_dir()
SMALL = "09_marlin_absE_0.10mm_comments_M3screw.gcode"

# Signs of OctoPrint trying to go online (the config disables all of it; the sandbox also points every
# HTTP proxy at a closed local port, so an attempt would show up as a logged connection error).
NETWORK = re.compile(
    r"zeroconf|ssdp|upnp|feedparser|pypi|github\.com|sentry|tracking\.octoprint|"
    r"get\.octoprint\.org|plugins\.octoprint\.org|127\.0\.0\.1:9\b|ProxyError|Max retries exceeded|"
    r"NewConnectionError|Name or service not known|Temporary failure in name resolution",
    re.IGNORECASE,
)


def test_server_is_up_with_the_plugin_loaded(sandbox):
    status, version = sandbox.api("GET", "/api/version")
    assert status == 200 and version["server"] == "1.11.8"
    status, settings = sandbox.api("GET", "/api/settings")
    assert status == 200
    assert "safepause" in settings["plugins"]
    assert re.search(r"^\|\s+SafePause \(", sandbox.log_text(), re.MULTILINE)  # in the loaded-plugins list


def test_viewer_may_look_but_not_print(sandbox):
    assert sandbox.api("GET", "/api/job", user="viewer")[0] == 200
    assert sandbox.api("POST", "/api/job", {"command": "start"}, user="viewer")[0] == 403
    assert sandbox.api("GET", "/api/job", user=None)[0] == 403


def test_upload_and_print_over_rest(sandbox):
    assert sandbox.state() == "Operational"
    status, reply = sandbox.upload(CORPUS_GCODE / SMALL)
    assert status == 201 and reply["done"], reply
    status, _ = sandbox.api("POST", f"/api/files/local/{SMALL}", {"command": "select", "print": True})
    assert status == 204
    sandbox.wait_state("Printing", timeout=20)

    # The file starts with M190/M109: the virtual printer heats at ~10 °C/s, so a few seconds in, the
    # job is still heating; check it keeps printing and the temperatures move towards the targets.
    temperatures = []
    for _ in range(6):
        time.sleep(0.5)
        status, job = sandbox.api("GET", "/api/job")
        assert status == 200 and job["state"] == "Printing", job
        temperatures.append(sandbox.api("GET", "/api/printer")[1]["temperature"])
    assert job["job"]["file"]["name"] == SMALL and job["progress"]["filepos"] > 0
    first, last = temperatures[0], temperatures[-1]
    assert last["bed"]["target"] > 0
    assert (
        last["bed"]["actual"] > first["bed"]["actual"] or last["tool0"]["actual"] > first["tool0"]["actual"]
    )

    assert sandbox.api("POST", "/api/job", {"command": "cancel"})[0] == 204
    sandbox.wait_state("Operational", timeout=30)
    serial = sandbox.serial_log.read_text(errors="replace")
    assert re.search(r"Send: N\d+ G1 ", serial)  # file lines went over the (virtual) wire
    assert 'Changing monitoring state from "Cancelling" to "Operational"' in serial


def test_log_has_no_plugin_errors_and_no_network(sandbox):
    log = sandbox.log_text()
    assert log, "octoprint.log is empty"
    assert plugin_log_problems(log_records(log)) == []
    network = [line for line in log.splitlines() if NETWORK.search(line) and not line.startswith("|")]
    assert network == []
    assert "Connectivity check is disabled" in log


def test_plugin_log_problems_judge_the_plugin_not_a_path():
    """OctoPrint's own serial errors (deliberate disconnects) may name the clone's folder, which carries
    the project's name: only the plugin's loggers, its frames and its routes count."""
    records = log_records(
        "2026-12-01 10:00:00,001 - octoprint.util.comm - ERROR - Unexpected error while writing to serial port\n"
        'Traceback (most recent call last):\n  File "/home/u/OctoPrint-SafePause/.venv/lib/python3.11/'
        'site-packages/octoprint/util/comm.py", line 1, in _do_send\nOSError: gone\n'
        "2026-12-01 10:00:00,002 - octoprint.plugins.safepause - WARNING - settings refused\n"
        "2026-12-01 10:00:00,003 - octoprint.plugins.safepause - ERROR - could not notify\n"
        "2026-12-01 10:00:00,004 - octoprint.server - INFO - hook failed\n"
        'Traceback (most recent call last):\n  File "/x/OctoPrint-SafePause/octoprint_safepause/api.py", '
        "line 3, in f\nKeyError: 1\n"
        "2026-12-01 10:00:00,005 - tornado.access - ERROR - 500 POST /api/plugin/safepause (127.0.0.1) 3ms\n"
        "2026-12-01 10:00:00,006 - tornado.access - WARNING - 404 GET /api/plugin/other (127.0.0.1) 1ms\n"
    )
    problems = plugin_log_problems(records)
    assert [r.split(" - ")[1] for r in problems] == ["octoprint.plugins.safepause", "octoprint.server", "tornado.access"]
