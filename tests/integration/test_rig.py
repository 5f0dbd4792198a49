"""The rig itself: OctoPrint's real Printer + MachineCom + VirtualPrinter, ground truth, the plugin's real
port (OctoPrintPort), events, the hold pattern of §2.5."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from rig import CORPUS_GCODE, Received, check_file_lines, file_lines

from octoprint_safepause.adapter.octoprint_port import OctoPrintPort

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SMALL = CORPUS_GCODE / "09_marlin_absE_0.10mm_comments_M3screw.gcode"  # 7605 file lines, ~2 s
LONG = CORPUS_GCODE / "01_marlin_absE_anycubic_cylinder_0.20mm.gcode"  # 36261 file lines, cancelled early


def fileline(tags) -> int:
    return int(next(t for t in tags if t.startswith("fileline:"))[len("fileline:") :])


def test_connected_idle(rig, port):
    assert rig.state() == "operational"
    assert port.state() == "operational"
    assert port.job() is None
    assert rig.hold_count() == 0
    assert rig.received() == []  # the connect handshake is not part of a test's capture


def test_prints_a_corpus_file_exactly_once_in_order(rig, port):
    delivered, changes = [], []
    rig.on_print_event = lambda name, payload: delivered.append((name, threading.current_thread().name))
    rig.on_state_change = lambda old, new: changes.append((old, new))

    job = rig.print_file(SMALL)
    assert port.job() == job
    # printed from OctoPrint's local storage: a copy of the file in the uploads folder
    assert job.origin == "local" and job.path == SMALL.name
    assert Path(job.disk_path).parent == Path(rig.settings.getBaseFolder("uploads"))
    assert Path(job.disk_path).read_bytes() == SMALL.read_bytes()
    assert port.profile()["volume"]["width"] == 210  # the corpus profile matching file 09
    assert rig.wait_done(30) == "PrintDone"

    report = check_file_lines(rig.records(), SMALL)
    assert report.ok, report
    assert report.expected == len(file_lines(SMALL)) == 7605
    assert [(c.old, c.new) for c in rig.state_changes()] == [
        ("OPERATIONAL", "STARTING"),
        ("STARTING", "PRINTING"),
        ("PRINTING", "FINISHING"),
        ("FINISHING", "OPERATIONAL"),
    ]
    # callbacks arrive on OctoPrint's event-bus thread, like a plugin's on_event
    rig.wait_for(
        lambda: ("finishing", "operational") in changes and any(d[0] == "PrintDone" for d in delivered)
    )
    assert [d[0] for d in delivered] == ["PrintStarted", "PrintDone"]
    assert not any(d[1].startswith("comm.") for d in delivered)
    assert port.job() == job  # stays selected after the print, as in OctoPrint


def test_hold_from_queuing_hook_then_resend_exactly_once(rig, port):
    """notes §2.5: the hook suppresses one file line and takes the hold itself; the test thread sends
    pause gcode while held, re-sends the saved line with its tags + a marker, then releases."""
    target = 3000
    saved, holds = [], []
    armed = threading.Event()
    armed.set()

    def hook(comm, phase, cmd, cmd_type, gcode, subcode=None, tags=None, *args, **kwargs):
        if not armed.is_set() or not tags or "source:file" not in tags or "safepause:resend" in tags:
            return None
        if fileline(tags) < target:
            return None
        saved.append((cmd, set(tags), threading.current_thread().name))
        if not holds:
            holds.append(comm.set_job_on_hold(True))  # synchronously, or streaming runs on (§2.6)
        return (None,)

    rig.hooks["queuing"] = hook
    rig.print_file(SMALL)
    rig.wait_for(lambda: saved, timeout=20)
    time.sleep(0.3)  # if the hold did not stop streaming, more lines would be suppressed or sent by now
    assert len(saved) == 1 and holds == [True]
    assert rig.hold_count() == 1 and port.state() == "printing"
    assert [r.fileline for r in rig.records() if r.fileline][-1] == target - 1

    port.send(["G91", "G1 Z5 F600", "G90"], tags={"safepause:pause"})
    rig.wait_for(lambda: rig.received()[-1:] == ["G90"])  # held: straight to the send queue
    armed.clear()
    cmd, tags, _thread = saved[0]
    port.send([cmd], tags=tags | {"safepause:resend"})  # still held: queued before any file line
    port.set_hold(False)
    assert rig.wait_done(30) == "PrintDone"
    assert rig.hold_count() == 0

    report = check_file_lines(rig.records(), SMALL)
    assert report.ok, report
    records = rig.records()
    i = next(k for k, r in enumerate(records) if r.tags and "safepause:pause" in r.tags)
    assert records[i - 1].fileline == target - 1
    assert [r.cmd for r in records[i : i + 4]] == ["G91", "G1 Z5 F600", "G90", cmd]
    assert records[i + 3].fileline == target and "safepause:resend" in records[i + 3].tags
    assert {"source:plugin", "plugin:safepause", "trigger:printer.commands"} <= records[i + 3].tags
    assert records[i + 4].fileline == target + 1


def test_resends_are_counted_once(rig):
    # simulated firmware errors (deterministic by line number) plus one triggered mid-print
    rig.connect(virtual={"simulated_errors": ["100:resend", "115:checksum_mismatch"]})
    rig.print_file(SMALL)
    rig.wait_for(lambda: len(rig.records()) > 2000)
    rig.debug("trigger_resend_lineno")
    assert rig.wait_done(30) == "PrintDone"

    report = check_file_lines(rig.records(), SMALL)
    assert report.ok, report
    resent = [r for r in rig.records() if r.resends]
    assert len(resent) >= 3
    assert len(rig.raw()) >= len(rig.received()) + len(resent)
    assert "!!DEBUG:trigger_resend_lineno" in rig.received()


def test_cancel_through_the_port(rig, port):
    rig.print_file(LONG)
    rig.wait_for(lambda: sum(r.fileline is not None for r in rig.records()) > 1000)
    port.cancel(tags={"safepause:test"})
    assert rig.wait_done(20) == "PrintCancelled"

    names = [name for name, _ in rig.fired()]
    assert names.index("PrintCancelling") < names.index("PrintCancelled")
    failed = rig.wait_event("PrintFailed")
    assert failed["reason"] == "cancelled"
    report = check_file_lines(rig.records(), LONG, complete=False)
    assert report.ok, report
    assert 1000 < report.delivered < report.expected
    received = rig.received()
    assert "M108" in received  # abortHeatupOnCancel, sent out of band (emergency parser)
    script = [r.cmd for r in rig.records() if r.tags and "script:afterPrintCancelled" in r.tags]
    assert "M84" in script  # OctoPrint's default afterPrintCancelled, run by Printer


def test_dropped_connection_fails_the_print(rig, port):
    rig.print_file(SMALL)
    rig.wait_for(lambda: len(rig.records()) > 500)
    rig.debug("drop_connection")
    assert rig.wait_done(30) == "PrintFailed"
    assert rig.wait_event("PrintFailed")["reason"] == "error"
    rig.wait_event("Disconnected")
    assert port.state() == "offline"
    with pytest.raises(RuntimeError):
        port.set_hold(True)
    # the next test's fixture reconnects; so can a test
    rig.connect()
    assert port.state() == "operational"


def test_checker_reports_gaps_duplicates_reorders_and_mismatches():
    lines = file_lines(SMALL)

    def record(number, text=None, *extra):
        tags = {"source:file", f"fileline:{number}", f"filepos:{number}", *extra}
        return Received(lines[number - 1] if text is None else text, number, frozenset(tags))

    order = [1, 2, 4, 3, 5, 5, 7]
    records = [record(n) for n in order] + [record(8, "G1 X0"), record(9, "G1 X1", "source:rewrite")]
    records.insert(1, Received("G91", None, frozenset({"safepause:pause"})))  # injected: ignored
    report = check_file_lines(records, SMALL, complete=False)
    assert not report.ok
    assert report.missing == [6, 8]  # a mismatch is no delivery
    assert report.duplicates == [(5, 2)]
    assert report.reorders == [(4, 3)]
    assert report.mismatches == [(8, lines[7], "G1 X0")]
    assert report.rewritten == [9]
    assert "missing=[6, 8]" in str(report)
    assert check_file_lines(records, SMALL).missing[-1] == len(lines)  # complete=True: the rest too


def test_port_satisfies_the_protocol():
    from octoprint_safepause.core.port import PrinterPort

    for name in ("send", "set_hold", "state", "job", "cancel", "profile"):
        assert callable(getattr(OctoPrintPort, name)), name
        assert hasattr(PrinterPort, name), name
