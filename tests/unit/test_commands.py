"""The command table: validation, status codes and permissions, against a controller whose state we set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from octoprint_safepause.core.commands import COMMANDS, refusal, run
from octoprint_safepause.core.controller import Refused


def handle_command(controller, name, data, user=None, recovery=None, check_settings=None):
    actions = SimpleNamespace(controller=controller, recovery=recovery, check_settings=check_settings)
    return run(actions, name, data, source=f"user:{user}" if user else "api")


class StubController:
    def __init__(self, refuse=None):
        self.refuse = refuse
        self.calls = []

    def _act(self, name, **kwargs):
        if self.refuse:
            raise Refused(self.refuse)
        self.calls.append((name, kwargs))

    def pause(self, **kwargs):
        self._act("pause", **kwargs)

    def resume(self, source=None):
        self._act("resume")

    def cancel(self):
        self._act("cancel")

    def get_state(self):
        return {"state": "idle"}


def test_pause_passes_reason_and_source():
    controller = StubController()
    status, body = handle_command(controller, "pause", {"command": "pause", "reason": " spaghetti "}, user="bob")
    assert status == 202 and body["state"] == {"state": "idle"}
    assert controller.calls == [("pause", {"reason": "spaghetti", "source": "user:bob"})]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"reason": 5}, "'reason' must be a string"),
        ({"reason": "x" * 201}, "longer than 200"),
        ({"source": ["a"]}, "'source' must be a string"),
    ],
)
def test_bad_parameters_are_400(data, message):
    controller = StubController()
    status, body = handle_command(controller, "pause", data)
    assert status == 400 and message in body["error"]
    assert controller.calls == []


def test_body_must_be_an_object():
    assert handle_command(StubController(), "pause", ["pause"])[0] == 400


def test_unknown_command_is_400():
    status, body = handle_command(StubController(), "explode", {})
    assert status == 400 and "unknown command" in body["error"]


@pytest.mark.parametrize("command", ["pause", "resume", "cancel"])
def test_wrong_state_is_409_with_the_reason(command):
    status, body = handle_command(StubController(refuse="not paused (state: idle)"), command, {})
    assert status == 409
    assert body["error"] == f"cannot {command}: not paused (state: idle)"
    assert body["state"]["state"] == "idle"


class StubRecovery:
    def __init__(self, refuse=None, nothing=False):
        self.refuse, self.nothing, self.calls = refuse, nothing, []

    def recover(self, **choices):
        from octoprint_safepause.core.recovery.service import RecoveryRefused

        if self.refuse:
            raise RecoveryRefused(*self.refuse)
        self.calls.append(choices)
        return {"path": "part.gcode", "start": 100}

    def discard(self):
        return not self.nothing


def test_recover_and_discard_go_to_the_recovery_service():
    recovery = StubRecovery()
    status, body = handle_command(
        StubController(), "recover", {"command": "recover", "position_kept": False, "start": "layer"}, recovery=recovery
    )
    assert status == 202 and body["recovery"]["start"] == 100
    assert recovery.calls == [{"position_kept": False, "start": "layer"}]
    assert handle_command(StubController(), "discard", {}, recovery=recovery) == (200, {"discarded": True})
    assert handle_command(StubController(), "discard", {}, recovery=StubRecovery(nothing=True))[0] == 409


def test_recover_refusals_keep_their_status():
    status, body = handle_command(StubController(), "recover", {}, recovery=StubRecovery(refuse=("bad start", 400)))
    assert status == 400 and "bad start" in body["error"]
    assert handle_command(StubController(), "recover", {"speed": 1}, recovery=StubRecovery())[0] == 400
    assert handle_command(StubController(), "recover", {}, recovery=None)[0] == 409


def test_permissions_come_from_the_table():
    def can_only(*granted):
        return lambda permission: permission in granted

    assert refusal("pause", {}, can_only()) == "you are not allowed to pause prints"
    assert refusal("cancel", {}, can_only()) == "you are not allowed to cancel prints"
    assert refusal("resume", {}, can_only("control")) is None
    assert refusal("validate", {"settings": {}}, can_only("control")) == "you are not allowed to change settings"
    # the user's own G-code needs OctoPrint's CONTROL on top of the right to recover
    prelude = {"prelude": ["G28 X Y"]}
    assert "Control permission" in refusal("recover", prelude, can_only("control"))
    assert refusal("recover", prelude, can_only("control", "gcode")) is None
    assert refusal("recover", {"position_kept": True}, can_only("control")) is None


def test_settings_commands_answer_400_with_every_refusal():
    def check(values):
        errors = {"lift": "Lift: must be a number"} if "lift" in values else {}
        return {"pause": ["G90"], "errors": errors}

    ok = handle_command(StubController(), "preview", {"settings": {}}, check_settings=check)
    assert ok == (200, {"pause": ["G90"], "errors": {}})
    status, body = handle_command(StubController(), "validate", {"settings": {"lift": "x"}}, check_settings=check)
    assert status == 400 and body == {"errors": {"lift": "Lift: must be a number"}, "error": "Lift: must be a number"}
    status, body = handle_command(StubController(), "preview", {"settings": {"lift": "x"}}, check_settings=check)
    assert status == 400 and body["pause"] == ["G90"] and body["errors"]
    assert handle_command(StubController(), "validate", {"settings": 3}, check_settings=check)[0] == 400


def test_every_command_is_documented_in_the_readme():
    """README's REST table names every command of the table (and nothing else)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("`POST /api/plugin/safepause`") :]
    section = section[: section.index("\n## ")]
    import re

    documented = set(re.findall(r'\{"command": "(\w+)"', section))
    assert documented == set(COMMANDS)
    for command in COMMANDS.values():
        assert command.help and command.answers and command.handler
