"""REST command validation and status codes, against a controller whose state we set."""

from __future__ import annotations

import pytest

from octoprint_safepause.api import handle_command
from octoprint_safepause.controller import Refused


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

    def resume(self):
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
        from octoprint_safepause.recovery_service import RecoveryRefused

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
