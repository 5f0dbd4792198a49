"""TemplateRunner: templates rendered in a real worker process, bounded in time, memory and output."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from octoprint_safepause.core import template_runner, template_worker
from octoprint_safepause.core.template_runner import TemplateRunner
from octoprint_safepause.core.templates_gcode import TemplateError, check, render

from .test_templates_gcode import BUILDING_BOMBS, FOLDING_BOMBS, context

TIMEOUT = 1.0
SLACK = 1.0  # kill, reap and answer; generous: a safety bound, not a benchmark
GOOD = "G1 X{{ state.x }} Y{{ state.y }} F{{ settings.travel_speed * 60 }}"

# Templates only the worker's deadline and memory limit can stop.
LOOPS = {
    "empty nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops over a list": "{% set l = range(99999)|list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "a macro called forever": "{% macro m() %}{% endmacro %}{% for i in range(99999) %}{% for j in range(99999) %}"
    "{{ m() }}{% endfor %}{% endfor %}",
    "exponential macro calls": "{% macro m(n) %}{{ m(n - 1) if n else '' }}{{ m(n - 1) if n else '' }}{% endmacro %}"
    "{{ m(60) }}",
}
MEMORY_BOMBS = {
    "a macro's output": "{% set s = 'x' * 99990 %}{% macro m() %}{% for i in range(99999) %}{{ s ~ i }}{% endfor %}"
    "{% endmacro %}{{ m() }}",
    "a set block": "{% set s = 'x' * 99990 %}{% set b %}{% for i in range(99999) %}{{ s ~ i }}{% endfor %}"
    "{% endset %}",
}


@pytest.fixture
def runner():
    with TemplateRunner(timeout=TIMEOUT) as runner:
        runner.start()
        yield runner


def gone(pid: int) -> bool:
    """Ended and reaped: not running, and no zombie left behind."""
    try:
        psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return False  # running, or a zombie nobody waited for


def assert_refused_in_time(runner, text, message=None):
    started = time.monotonic()
    with pytest.raises(TemplateError) as raised:
        runner.render(text, context(), name="pause_template")
    elapsed = time.monotonic() - started
    assert elapsed < runner.timeout + SLACK, f"took {elapsed:.2f} s"
    if message is not None:
        assert message in raised.value.message
    assert str(raised.value).startswith("pause_template")
    return raised.value


def test_renders_what_render_renders(runner):
    ctx = context()
    for text in [
        GOOD,
        "; comment\n{% if plan.park_xy %}G1 X{{ plan.park_xy[0] + 5 }}{% endif %}\n M104 S{{ state.tool_temps['0'] }}",
        "M117 {{ printer_profile.volume.width }} {{ volume.z_max }} {{ plan.lines|length }} {{ state.homed|join }}",
        "{% for i in range(3) %}G4 P{{ i }}\n{% endfor %}",
    ]:
        assert runner.render(text, ctx) == render(text, ctx)
    assert runner.render(
        "M117 {{ t[0] }} {{ f['1'] }} {{ n }}", {"t": (1, 2), "f": {1: "a"}, "n": float("nan")}
    ) == ["M117 1 a nan"]


def test_errors_are_the_same_as_in_process(runner):
    for text in ["G1\n{{ 1 / 0 }}", "G1 X1\nG1 X{{ park_x }}", "G1\n{% for x in %}", "{{ state.__class__ }}"]:
        with pytest.raises(TemplateError) as here:
            render(text, context(), name="resume_template")
        with pytest.raises(TemplateError) as there:
            runner.render(text, context(), name="resume_template")
        assert (str(there.value), there.value.lineno) == (str(here.value), here.value.lineno)
    assert runner.check("{{ oops", "Pause G-code") == check("{{ oops", "Pause G-code")
    assert runner.check(GOOD) is None and runner.check("") is None


def test_blank_templates_never_start_the_worker():
    runner = TemplateRunner()
    assert runner.render("", {}) == [] and runner.render(" \n ", {}) == [] and runner.check("  ") is None
    assert runner.worker_pid is None


@pytest.mark.parametrize("text, message", [*FOLDING_BOMBS.items(), *BUILDING_BOMBS.items()])
def test_recognised_bombs_are_refused_by_the_worker(runner, text, message):
    pid = runner.worker_pid
    assert_refused_in_time(runner, text, message)
    assert runner.worker_pid == pid  # answered, not killed
    assert runner.check(text) is None  # compiling them is harmless


@pytest.mark.parametrize("what", LOOPS)
def test_endless_templates_are_stopped_at_the_deadline(runner, what):
    pid = runner.worker_pid
    error = assert_refused_in_time(runner, LOOPS[what], f"took longer than {TIMEOUT:g} s (stopped)")
    assert error.lineno is None
    assert gone(pid)
    assert runner.render(GOOD, context()) == render(GOOD, context())  # a new worker
    assert runner.worker_pid not in (None, pid)


@pytest.mark.parametrize("what", MEMORY_BOMBS)
def test_memory_bombs_end_as_errors_and_a_fresh_worker(what):
    with TemplateRunner(timeout=10.0) as runner:  # they run out of memory well before
        runner.start()
        pid = runner.worker_pid
        assert_refused_in_time(runner, MEMORY_BOMBS[what], "out of memory")
        assert gone(pid)
        assert runner.render(GOOD, context()) == render(GOOD, context())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_limits_its_own_memory(runner):
    with open(f"/proc/{runner.worker_pid}/limits") as limits:
        address_space = next(line for line in limits if line.startswith("Max address space"))
    assert address_space.split()[3:5] == [str(template_worker.MAX_MEMORY)] * 2


def test_output_bounds_name_the_line(runner):
    error = assert_refused_in_time(
        runner, "G4\n\nM117 {{ 'x' * 92 }}", "G-code line 2 of the output is 97 characters"
    )
    assert error.lineno is None
    assert_refused_in_time(
        runner, "{% for i in range(1001) %}G4\n{% endfor %}", "renders more than 1000 lines"
    )


def test_the_parent_stays_responsive_while_the_worker_grinds(runner):
    failures = []

    def grind():
        try:
            runner.render(LOOPS["empty nested loops"], {})
        except TemplateError as error:
            failures.append(error)

    thread = threading.Thread(target=grind)
    thread.start()
    longest, last = 0.0, time.monotonic()
    while thread.is_alive():
        time.sleep(0.01)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    assert longest < 0.5 and len(failures) == 1  # the render took a whole second of the worker's CPU


def test_concurrent_renders_each_get_their_own_answer(runner):
    results, errors = {}, []

    def work(n):
        try:
            for k in range(5):
                results[(n, k)] = runner.render("G1 X{{ n }} Y{{ k }}", {"n": n, "k": k})
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == {(n, k): [f"G1 X{n} Y{k}"] for n in range(8) for k in range(5)}


def test_other_threads_wait_while_one_template_is_stopped(runner):
    answers = []
    slow = threading.Thread(target=lambda: answers.append(check_refused(runner, LOOPS["empty nested loops"])))
    slow.start()
    time.sleep(0.1)
    assert runner.render(GOOD, context()) == render(GOOD, context())  # after the slow one was killed
    slow.join()
    assert answers == [True]


def check_refused(runner, text) -> bool:
    try:
        runner.render(text, {})
    except TemplateError:
        return True
    return False


def test_a_worker_killed_from_outside(runner):
    os.kill(runner.worker_pid, signal.SIGKILL)
    time.sleep(0.1)
    assert runner.render(GOOD, context()) == render(GOOD, context())  # dead between requests: restarted

    pid = runner.worker_pid
    threading.Timer(0.2, os.kill, (pid, signal.SIGKILL)).start()
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"the template worker died before answering \(exit code -9\)"):
        runner.render(LOOPS["empty nested loops"], {})
    assert time.monotonic() - started < TIMEOUT  # not waiting for the deadline
    assert runner.render(GOOD, context()) == render(GOOD, context())


def fake_worker(tmp_path, monkeypatch, body: str) -> None:
    script = tmp_path / "fake_worker.py"
    script.write_text(textwrap.dedent(body))
    monkeypatch.setattr(template_runner, "WORKER_PATH", str(script))


def test_a_worker_answering_garbage(tmp_path, monkeypatch):
    fake_worker(tmp_path, monkeypatch, """
        import sys
        print('{"ready": true}', flush=True)
        for line in sys.stdin:
            print("garbage", flush=True)
    """)  # fmt: skip
    with TemplateRunner(timeout=TIMEOUT) as runner:
        with pytest.raises(TemplateError, match="the template worker answered garbage: b'garbage"):
            runner.render(GOOD, {})
        assert runner.worker_pid is None


def test_a_worker_that_cannot_start(tmp_path, monkeypatch):
    fake_worker(tmp_path, monkeypatch, "import sys; sys.exit('no jinja2 here')")
    runner = TemplateRunner(timeout=TIMEOUT)
    with pytest.raises(TemplateError, match="died before answering .exit code 1.: no jinja2 here"):
        runner.render(GOOD, {})
    fake_worker(tmp_path, monkeypatch, "import time; time.sleep(60)")
    runner = TemplateRunner(timeout=TIMEOUT, start_timeout=0.5)
    with pytest.raises(TemplateError, match="did not start within 0.5 s"):
        runner.render(GOOD, {})
    assert runner.worker_pid is None


def test_close_does_not_wait_for_a_render_in_progress(runner):
    pid = runner.worker_pid
    threading.Timer(0.2, runner.close).start()
    started = time.monotonic()
    with pytest.raises(TemplateError, match="the template worker died before answering"):
        runner.render(LOOPS["empty nested loops"], {})
    assert time.monotonic() - started < TIMEOUT and gone(pid)


def test_close_gc_and_exit_leave_no_process():
    runner = TemplateRunner()
    runner.start()
    pid = runner.worker_pid
    runner.close()
    assert gone(pid) and runner.worker_pid is None
    assert runner.render(GOOD, context()) == render(GOOD, context())  # closed is not broken

    pid = runner.worker_pid
    del runner
    gc.collect()
    assert gone(pid)

    script = "from octoprint_safepause.core.template_runner import TemplateRunner\nr = TemplateRunner()\nr.start()\nprint(r.worker_pid)"
    pid = int(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    assert gone(pid)


def test_start_cost_and_warm_renders_are_small(runner):
    # A safety net, not a benchmark: the worker starts once and stays; renders reuse it.
    started = time.monotonic()
    for n in range(20):
        assert runner.render("G1 X{{ n }}", {"n": n}) == [f"G1 X{n}"]
    assert (time.monotonic() - started) / 20 < 0.2


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_CPU")
def test_a_worker_whose_parent_died_mid_render_stops_on_its_own():
    script = textwrap.dedent(f"""
        import os, threading, time
        from octoprint_safepause.core.template_runner import TemplateRunner
        runner = TemplateRunner(timeout=1.0)
        runner.start()
        print(runner.worker_pid, flush=True)
        threading.Thread(target=runner.render, args=({LOOPS["empty nested loops"]!r}, {{}}), daemon=True).start()
        time.sleep(0.3)
        os._exit(0)  # no cleanup at all, as if OctoPrint were killed
    """)  # fmt: skip
    pid = int(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    deadline = time.monotonic() + 1.0 + template_worker.CPU_BACKSTOP + 20  # CPU seconds, on a busy machine
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break  # ended; reaping an orphan is init's business
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    assert time.monotonic() < deadline
