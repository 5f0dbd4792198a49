"""Checks on what reached the printer, shared by the controller tests (fake comm and real MachineCom).

`LineLedger` follows every file line: it wraps the controller's queuing hook (which lines the armed hook
saved, i.e. suppressed) and listens to the controller's log (how many saved lines each cancel says it
dropped). `LineLedger.problems()` then holds the delivered file lines to: every file line reached the
printer exactly once and in file order, or it was saved by the hook, never re-sent, and dropped by a
cancel that says so, the cancels' counts covering the dropped lines in file order. A line that vanishes
any other way (a resume that forgets a saved line, a cancel that drops more than it reports) is a
problem, wherever in the print it was.

`first_extrusion()` finds the first line that pushes filament, with E followed by the independent model
of tests/unit/independent_model.py (not the tracker under test); `last_s_value()` reads a print's own
temperature targets from the lines it printed, `heat_wait_index()` finds the M109 / M190 for one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading

from tests.unit.independent_model import KlipperStyleModel

DROP_LOG = re.compile(r"SafePause dropped (\d+) saved line\(s\) on cancel")
TAG_RESEND = "safepause:resend"  # spelled out (not imported) so a renamed tag in the product shows up here
MOVES = frozenset(["G0", "G1", "G2", "G3"])


def fileline_of(tags) -> int | None:
    """The `fileline:<n>` of a line OctoPrint read from the print file (`source:file`), else None."""
    if not tags or "source:file" not in tags:
        return None
    for tag in tags:
        if tag.startswith("fileline:"):
            return int(tag[len("fileline:") :])
    return None


class _DropHandler(logging.Handler):
    def __init__(self, ledger: LineLedger):
        super().__init__(logging.DEBUG)
        self._ledger = ledger

    def emit(self, record):
        match = DROP_LOG.search(record.getMessage())
        if match:
            with self._ledger._lock:
                self._ledger.drops.append(int(match.group(1)))


class LineLedger:
    def __init__(self):
        self._lock = threading.Lock()
        self.saved: list[int] = []  # file lines the armed hook suppressed (saved), in the order it did
        self.drops: list[int] = []  # "dropped N saved line(s) on cancel", N in log order

    def hook(self, on_queuing):
        """The controller's queuing hook, recording the file lines it suppresses."""

        def queuing(comm, phase, cmd, cmd_type, gcode, *args, **kwargs):
            result = on_queuing(comm, phase, cmd, cmd_type, gcode, *args, **kwargs)
            tags = kwargs.get("tags")
            number = fileline_of(tags)
            if result == (None,) and number is not None and TAG_RESEND not in tags:
                with self._lock:
                    self.saved.append(number)
            return result

        return queuing

    @contextlib.contextmanager
    def listening(self, logger: logging.Logger):
        """Count the cancels' drop reports on `logger` (an INFO message) while inside."""
        handler = _DropHandler(self)
        level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            yield self
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    def dropped(self, delivered: list[int]) -> list[int]:
        """The saved lines that never reached the printer, in file order."""
        with self._lock:
            return sorted(set(self.saved) - set(delivered))

    def problems(self, delivered: list[int], total: int | None = None, blocked=frozenset()) -> list[str]:
        """`delivered`: the file line numbers in the order they reached the printer (re-sends included).
        `total`: the file's line count when the print ran to its end; None when it was cancelled (the
        lines after the last one delivered or dropped were never read). `blocked`: lines OctoPrint itself
        never sends (serial.blockedCommands)."""
        with self._lock:
            saved, drops = list(self.saved), list(self.drops)
        problems = []
        counts: dict[int, int] = {}
        for number in delivered:
            counts[number] = counts.get(number, 0) + 1
        twice = sorted(n for n, c in counts.items() if c > 1)
        if twice:
            problems.append(f"delivered more than once: {twice[:10]}")
        back = [(a, b) for a, b in zip(delivered, delivered[1:]) if b < a]
        if back:
            problems.append(f"delivered out of order (previous, next): {back[:10]}")
        saved_twice = sorted({n for n in saved if saved.count(n) > 1})
        if saved_twice:
            problems.append(f"saved more than once: {saved_twice[:10]}")
        dropped = self.dropped(delivered)
        if sum(drops) != len(dropped):
            problems.append(
                f"saved and never re-sent: {len(dropped)} line(s) {dropped[:20]}, "
                f"but the cancels report {sum(drops)} dropped (in {len(drops)} report(s))"
            )
        else:
            # one cancel drops one pause's saved lines: consecutive file lines, pauses in file order
            start = 0
            for n, count in enumerate(drops):
                run = dropped[start : start + count]
                if not run or run != list(range(run[0], run[0] + len(run))):
                    problems.append(f"cancel {n} reports {count} dropped, which would be {run}: not one run")
                start += count
        accounted = set(counts) | set(dropped)
        end = total if total is not None else max(accounted, default=0)
        missing = [n for n in range(1, end + 1) if n not in accounted and n not in blocked]
        if missing:
            problems.append(f"never delivered and not dropped by a cancel: {missing[:20]} ({len(missing)})")
        beyond = sorted(n for n in accounted if n > end)
        if beyond:
            problems.append(f"file lines beyond the file's {end}: {beyond[:10]}")
        return problems

    def summary(self) -> str:
        with self._lock:
            return f"{len(self.saved)} line(s) saved, {len(self.drops)} cancel(s) dropped {sum(self.drops)}"


def first_extrusion(lines, start: int = 0, flavour: str = "marlin") -> int | None:
    """Index of the first line at or after `start` that pushes filament: G11 (firmware un-retract) or a
    G0-G3 whose E goes forward. E (modes, G92) is followed over all `lines` from the first; a forward
    move from an unknown E counts when its value is positive."""
    model = KlipperStyleModel(flavour)
    for index, line in enumerate(lines):
        words = line.split(";", 1)[0].upper().split()
        command = words[0] if words else ""
        before, relative = model.last[3], model.e_relative()
        model.feed(line)
        if index < start:
            continue
        if command == "G11":
            return index
        if command in MOVES:
            values = [w[1:] for w in words[1:] if w.startswith("E")]
            if not values:
                continue
            after = model.last[3]
            if math.isfinite(before) and math.isfinite(after):
                if after - before > 1e-9:
                    return index
            elif relative is not False:
                with contextlib.suppress(ValueError):
                    if float(values[0]) > 0:
                        return index
            else:
                return index  # absolute E from an unknown E: cannot tell, assume it extrudes
    return None


def last_s_value(lines, commands):
    """The S value of the last of `lines` that is one of `commands` (e.g. the hotend target in force)."""
    for line in reversed(lines):
        words = line.split(";", 1)[0].split()
        if words and words[0].upper() in commands:
            for word in words[1:]:
                if word.upper().startswith("S"):
                    return float(word[1:])
    return None


def heat_wait_index(lines, start, command, target):
    """Index of the first line at or after `start` that waits (`command`: M109 or M190) for `target`, on
    tool 0 (T0 or no T)."""
    for index in range(start, len(lines)):
        words = lines[index].upper().split()
        if not words or words[0] != command:
            continue
        params = {w[0]: w[1:] for w in words[1:] if w}
        if params.get("T", "0") == "0" and "S" in params and float(params["S"]) == target:
            return index
    return None


def assert_reheated_before_extruding(lines, first_resume: int, resend: int, targets: dict, waits) -> None:
    """Each heat wait of `waits` (M109, M190) for its target in `targets` goes out after the resume
    began and before the first line that extrudes and before the saved line (`resend`)."""
    extrusion = first_extrusion(lines, first_resume)
    assert extrusion is not None, lines[first_resume:]
    restore = lines[first_resume:resend]
    for command in waits:
        wait = heat_wait_index(lines, first_resume, command, targets[command])
        assert wait is not None, f"no {command} S{targets[command]:g} after the resume: {restore}"
        assert wait < extrusion, f"{lines[extrusion]!r} extrudes before {lines[wait]!r}: {restore}"
        assert wait < resend, f"the saved line went out before {lines[wait]!r}: {restore}"
