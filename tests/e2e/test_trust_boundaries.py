"""The attacks of issue 11, repeated on a real `octoprint serve`: each is refused with a clear 4xx, the
server answers other requests within a second throughout, and nothing refused reaches the printer.

Uses `sp_server` (conftest.py). The looping / unsafe templates at a real pause: tests/integration.
"""

from __future__ import annotations

import threading
import time

import pytest
import sandbox as sandbox_module

from .test_recovery import fail_mid_print, forget, get_recovery
from .test_rest_api import as_user, ensure_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ATTACK_PRELUDE = [
    "G28", "G1 Z-50 F600", "G1 X5000 Y-300", "M302 S0", "M92 X1", "M500", "G1 E500 F3000", "M117 a\u0000b",
    "@pause",
]  # fmt: skip
PRINTER_USER = ("printer_only", "printer_only_pw")

BOMBS_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOMBS = {
    "{{ 7**(10**8) }}": "",
    "{{ 7**(10**7) }}": "",
    BOMBS_LOOP: "took longer",
    "M117 {{ 'x'*200000 }}": "",
    "G1 X9999 Y-500 Z-20 F6000": "safety check",
}


# A template rendered on a web or controller thread would stall the server for at least the worker's
# deadline (2 s); the slowest answer must stay well below it. Not a speed goal: the suite's other
# workers share the 2 cores, and a single answer took 1.01 s once under that load.
BLOCKED_AFTER = 1.5  # s


class Responsiveness:
    """Polls GET /api/version from another thread; `worst` is the slowest answer seen."""

    def __init__(self, server):
        self.server, self.worst, self.failures = server, 0.0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            status, _ = self.server.api("GET", "/api/version", timeout=10)
            self.worst = max(self.worst, time.monotonic() - t0)
            if status != 200:
                self.failures.append(status)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def settings_command(server, command, settings, user="admin"):
    return server.command(command, user=user, settings=settings)


def test_template_bombs_are_refused_quickly_and_the_server_stays_responsive(sp_server):
    before = sp_server.api("GET", "/api/settings")[1]["plugins"]["safepause"]["pause_template"]
    with Responsiveness(sp_server) as poll:
        for template, why in BOMBS.items():
            for command in ("validate", "preview"):
                t0 = time.monotonic()
                status, body = settings_command(sp_server, command, {"pause_template": template})
                elapsed = time.monotonic() - t0
                assert status == 400, (template, command, status, body)
                assert "pause_template" in body["errors"] and why in body["errors"]["pause_template"], body
                assert elapsed < 4.0, (template, command, elapsed)
            # saving stores nothing of it, and says so
            status, _ = sp_server.api("POST", "/api/settings", {"plugins": {"safepause": {"pause_template": template}}})
            assert status == 200
            stored = sp_server.api("GET", "/api/settings")[1]["plugins"]["safepause"]["pause_template"]
            assert stored == before, template
    assert poll.failures == [] and poll.worst < BLOCKED_AFTER, (poll.failures, poll.worst)
    # a sane template is still accepted and shown
    status, body = settings_command(sp_server, "preview", {"pause_template": "M117 paused at {{ state.z }}"})
    assert status == 200 and body["errors"] == {} and body["pause"][-1].startswith("M117 paused at ")


def test_every_setting_is_checked_when_saved(sp_server):
    before = sp_server.api("GET", "/api/settings")[1]["plugins"]["safepause"]
    bad = {"recovery_home_axes": "XYZ", "recovery_prime_length": "lots", "recovery_park": "no way", "firmware": "x"}
    status, _ = sp_server.api("POST", "/api/settings", {"plugins": {"safepause": bad}})
    assert status == 200
    after = sp_server.api("GET", "/api/settings")[1]["plugins"]["safepause"]
    assert {k: after[k] for k in bad} == {k: before[k] for k in bad}
    status, body = settings_command(sp_server, "validate", bad)
    assert status == 400 and sorted(body["errors"]) == sorted(bad), body


def test_deeply_nested_json_gets_400_not_500(sp_server):
    body = ("[" * 5000 + "]" * 5000).encode()
    for user in ("admin", "viewer"):
        headers = {"X-Api-Key": sandbox_module.USERS[user][2], "Content-Type": "application/json"}
        status, reply = sp_server.sb._request("POST", "/api/plugin/safepause", body, headers, 10)
        assert status == 400 and "nested" in reply["error"], (user, status, reply)
    assert sp_server.plugin_log_problems() == []


def ensure_printer_user(server) -> str:
    """A user with PRINT (and STATUS) but not CONTROL: OctoPrint refuses them its terminal."""
    status, groups = server.api("GET", "/api/access/groups")
    if "print_no_control" not in {group["key"] for group in groups["groups"]}:
        body = {"key": "print_no_control", "name": "Print, no control", "permissions": ["PRINT", "STATUS"], "subgroups": []}
        assert server.api("POST", "/api/access/groups", body)[0] == 200
    name, password = PRINTER_USER
    if server.api("GET", f"/api/access/users/{name}")[0] == 404:
        body = {"name": name, "password": password, "active": True, "groups": ["print_no_control"]}
        assert server.api("POST", "/api/access/users", body)[0] == 200
    status, reply = server.api("POST", f"/api/access/users/{name}/apikey")
    assert status == 200
    return reply["apikey"]


def test_a_custom_prelude_needs_control_and_passes_the_safety_check(sp_server):
    sp_server.ensure_ready()
    forget(sp_server)
    printer_key = ensure_printer_user(sp_server)
    operator_key = ensure_operator(sp_server)
    # OctoPrint itself refuses this user its terminal
    assert as_user(sp_server, printer_key, "POST", "/api/printer/command", {"command": "M500"})[0] == 403
    fail_mid_print(sp_server)
    rec = get_recovery(sp_server)
    assert rec is not None and rec["prelude"]
    mark = sp_server.serial_mark()

    body = {"command": "recover", "position_kept": False, "prelude": ATTACK_PRELUDE}
    for key in (printer_key, operator_key):
        status, reply = as_user(sp_server, key, "POST", "/api/plugin/safepause", body)
        assert status == 403 and "Control permission" in reply["error"], (status, reply)
    # the built prelude stays available to whoever may recover ... (checked below by the admin)
    # ... and with CONTROL every line is still checked before anything is sent: 400 naming the line
    for line in ATTACK_PRELUDE:
        if line in ("M302 S0", "M92 X1", "M500", "G1 E500 F3000"):
            continue  # what the terminal may send anyway
        status, reply = sp_server.command("recover", position_kept=False, prelude=rec["prelude"][:3] + [line])
        assert status == 400 and "line 4" in reply["error"], (line, status, reply)
    # the whole attack: what is not one plain command is named first (checked before any state is
    # needed), then the first line the motion check refuses
    status, reply = sp_server.command("recover", position_kept=False, prelude=ATTACK_PRELUDE)
    assert status == 400 and "line 8 'M117 a\\x00b'" in reply["error"] and "control character" in reply["error"], reply
    plain = [line for line in ATTACK_PRELUDE if line.isprintable() and not line.startswith("@")]
    status, reply = sp_server.command("recover", position_kept=False, prelude=plain)
    assert status == 400 and "line 1 'G28'" in reply["error"] and "homes Z onto the print" in reply["error"], reply
    assert [cmd for _, cmd in sp_server.sends(mark)] == [], "a refused prelude sent something"
    assert get_recovery(sp_server) is not None, "a refused prelude lost the recovery"

    # the built prelude with a harmless line of one's own: accepted and recovered
    status, reply = sp_server.command("recover", position_kept=False, prelude=rec["prelude"] + ["M117 recovered"])
    assert status == 202, (status, reply)
    sp_server.wait_for(lambda: sp_server.job()["state"] == "Operational", 60, interval=0.1, what="recovered print")
    sent = [cmd for _, cmd in sp_server.sends(mark)]
    assert "M117 recovered" in sent and "M500" not in sent


def test_a_looping_template_written_into_config_yaml_still_parks_and_cancels(sp_server):
    """The careless admin: a template that loops for ever, put straight into config.yaml (nothing
    validates that file). The pause still retracts, lifts and parks, says the template was skipped,
    and SafePause's cancel ends it; the server answers throughout."""
    import yaml

    config = sp_server.sb.basedir / "config.yaml"
    sp_server.sb.stop()
    data = yaml.safe_load(config.read_text()) or {}
    data.setdefault("plugins", {}).setdefault("safepause", {})["pause_template"] = BOMBS_LOOP
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        sp_server.sb.start()
        sp_server.sb.connect(profile="corpus_210x210x205")
        with Responsiveness(sp_server) as poll:
            sp_server.start_print(0.35)
            mark = sp_server.serial_mark()
            t0 = time.monotonic()
            assert sp_server.command("pause", reason="loop")[0] == 202
            state = sp_server.wait_sp("paused", timeout=10)
            assert time.monotonic() - t0 < 8
            assert any("took longer" in w for w in state["warnings"]), state
            sent = [cmd for _, cmd in sp_server.sends(mark)]
            assert any(cmd.startswith("G1 Z") for cmd in sent), sent  # lifted
            assert sp_server.command("cancel")[0] == 202
            sp_server.wait_sp("idle", timeout=15)
            sp_server.sb.wait_state("Operational", timeout=15)
        assert poll.failures == [] and poll.worst < BLOCKED_AFTER, (poll.failures, poll.worst)
    finally:
        sp_server.sb.stop()
        data["plugins"]["safepause"].pop("pause_template", None)
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        sp_server.sb.start()
        sp_server.sb.connect(profile="corpus_210x210x205")
