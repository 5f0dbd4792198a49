"""The controller's helpers, each on its own: the shadow tracker and the heater clock."""

from __future__ import annotations

import threading

from octoprint_safepause.core.gcode import StateTracker
from octoprint_safepause.core.heater_clock import HeaterClock
from octoprint_safepause.core.sequences import MotionSettings
from octoprint_safepause.core.shadow import MAX_NOTES, Shadow


def _file(tmp_path, lines):
    path = tmp_path / "print.gcode"
    path.write_text("".join(line + "\n" for line in lines))
    ends, pos = [], 0
    for line in lines:
        pos += len(line) + 1
        ends.append(pos)
    return str(path), ends


def test_shadow_merges_notes_at_their_file_position(tmp_path):
    path, ends = _file(tmp_path, ["G90", "M83", "G1 X10 Y10 F600", "G1 X20 E1", "G1 X30 E1"])
    shadow = Shadow()
    shadow.note(ends[2], "M104 S215")  # typed in the terminal after line 3 went out
    follower = shadow.advance(path, ends[3], StateTracker)
    state = follower.tracker.state
    assert (state.x, state.tool_temps) == (20.0, {0: 215.0})
    # the next catch-up reads on from there; a later note goes in at its own place
    shadow.note(ends[3], "G92 E0")
    assert shadow.advance(path, ends[4], StateTracker) is follower
    assert follower.tracker.state.e == 1.0 and follower.pos == ends[4]


def test_shadow_starts_again_for_another_file_or_an_earlier_position(tmp_path):
    path, ends = _file(tmp_path, ["G90", "G1 X10 F600", "G1 X20"])
    shadow = Shadow()
    first = shadow.advance(path, ends[2], StateTracker)
    again = shadow.advance(path, ends[1], StateTracker)
    assert again is not first and again.tracker.state.x == 10.0
    shadow.drop()
    assert shadow.advance(path, ends[0], StateTracker).tracker.state.x is None


def test_shadow_notes_are_bounded_and_said_to_be(tmp_path):
    shadow = Shadow()
    threads = [threading.Thread(target=lambda: [shadow.note(1, "M104 S1") for _ in range(MAX_NOTES)]) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shadow.dropped and len(shadow._notes) == MAX_NOTES
    shadow.reset()
    assert not shadow.dropped and shadow._notes == []


def test_heater_clock_acts_when_due_and_counts_down():
    tracker = StateTracker("marlin")
    for line in ("M140 S60", "M104 S210"):
        tracker.feed(line)
    settings = MotionSettings(hotend_off_after=1.0, bed_off_after=0.0)
    clock = HeaterClock(held_at=1000.0)
    assert clock.due(1000.0)
    first = clock.step(tracker.state, settings, "marlin", 1000.0)
    assert first.lines == [] and clock.action_in(1000.0) == 60.0 and not clock.due(1030.0)
    assert clock.action_in(1030.0) == 30.0
    off = clock.step(tracker.state, settings, "marlin", 1061.0)
    assert off.lines == ["M104 T0 S0"]
    assert clock.heaters_off and clock.next_check is None and clock.action_in(2000.0) is None
    assert not clock.due(10**9)
