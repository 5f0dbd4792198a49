"""Which file lines reached the printer, on OctoPrint's real Printer and MachineCom: the plugin's adapter
(`written_commands`, from MachineCom's resend history and terminal log) and the matching against the
file (core/recovery/delivered.py) against the ground truth, what the virtual printer's serial port got.

The connection is dropped at random points of real slicer files, at full streaming speed, so lines are
read ahead of the ones written, and a write can fail when the port goes away."""

from __future__ import annotations

import random
import time

import pytest
from octoprint.util.comm import process_gcode_line
from rig import CORPUS_GCODE

from octoprint_safepause.core.recovery.delivered import file_lines_before, unsent_bytes

FILES = ("02_marlin2_relE_zhop_ender3_bunny_0.16mm.gcode", "05_rrf_toolchanger_T0T1_relE_box_0.20mm.gcode")


def _ends_of_sent_lines(path) -> list[int]:
    """OctoPrint's position after each line it sends from the file (comments and empty lines skipped)."""
    ends, pos = [], 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        for line in iter(fh.readline, ""):
            pos += len(line.encode("utf-8"))
            if process_gcode_line(line):
                ends.append(pos)
    return ends


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


@pytest.mark.parametrize("name", FILES)
def test_the_last_file_line_written_is_found_after_a_drop(rig, name):
    path = CORPUS_GCODE / name
    ends = _ends_of_sent_lines(path)
    rng = random.Random(name)
    for attempt in range(2):
        port = rig.port()
        rig.connect()
        job = rig.print_file(path)
        size = path.stat().st_size
        target = size * rng.uniform(0.05, 0.4)
        _wait(lambda t=target: (rig.comm.getFilePosition() or {}).get("pos", 0) > t, 60, "the print to get there")
        port.file_position()  # the controller's poll: the adapter has seen this connection
        rig.virtual_printer._debug_drop_connection = True  # every further read and write fails
        rig.virtual_printer.outgoing.put("")
        _wait(lambda: rig.comm is None, 10, "the connection to close")
        read_pos = rig.file_manager.get_recovery_data()["pos"]  # what OctoPrint recorded: read
        got = [r for r in rig.records() if r.tags and "source:file" in r.tags]
        assert got, "no file line reached the printer"
        truth = ends[len(got) - 1]  # after the last file line the printer's serial port got
        unsent = unsent_bytes(file_lines_before(job.disk_path, read_pos), port.written_commands())
        assert unsent is not None, (name, attempt, read_pos)
        assert read_pos - unsent == truth, (name, attempt, read_pos, truth, [r.cmd for r in got[-3:]])
