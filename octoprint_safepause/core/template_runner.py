"""Users' templates rendered in a worker process (template_worker.py), with a deadline.

In-process hardening (templates_gcode) refuses what it can recognise, but a template can still loop
for hours (`{% for i in range(99999) %}{% for j in range(99999) %}...`) or fill memory inside a
macro. So rendering happens in a child process: the caller waits at most `timeout` seconds, then the
worker is killed (and started again at the next request) and the caller gets a TemplateError. The
worker also limits its own address space, so a memory bomb is answered as an error.

One request at a time per runner (a lock). The worker stays alive between requests: starting one
(python + jinja2) costs about 0.2 s on a PC and more on a Raspberry Pi, a warm render about 1 ms;
`start()` pays the start ahead of the first request.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import jinja2
import markupsafe

from .templates_gcode import TemplateError, json_safe

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template_worker.py")
START_TIMEOUT = 20.0  # s for python + jinja2 to start: ~0.1 s on a PC, seconds on a busy Raspberry Pi
MAX_ANSWER_BYTES = 1 << 20  # an answer is at most ~100 KB of G-code; more is garbage


class _WorkerFailed(Exception):
    """The worker died, did not answer in time, or answered garbage: it must be killed."""


def _library_paths() -> list[str]:
    # Where this process found jinja2 and markupsafe, for the worker's sys.path: -I leaves out the user
    # site directory, where a `pip install --user` OctoPrint keeps them.
    return sorted(
        {os.path.dirname(os.path.dirname(os.path.abspath(m.__file__))) for m in (jinja2, markupsafe)}
    )


def _read_answers(stream, answers: queue.Queue) -> None:
    with contextlib.suppress(OSError, ValueError), stream:
        for line in iter(lambda: stream.readline(MAX_ANSWER_BYTES), b""):
            answers.put(line)
    answers.put(None)  # end of file: the worker is gone


def _drain(stream, tail: collections.deque) -> None:
    # stderr must be read, or a chatty worker blocks on a full pipe; the last lines explain a death.
    with contextlib.suppress(OSError, ValueError), stream:
        for line in iter(lambda: stream.readline(4096), b""):
            tail.append(line.decode("utf-8", "replace").rstrip())


def _kill(process: subprocess.Popen) -> None:
    """Kills and reaps the worker (no zombie); safe to call twice, at exit and from a finalizer."""
    with contextlib.suppress(OSError):
        if process.poll() is None:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with contextlib.suppress(OSError):
        process.stdin.close()


class _Worker:
    """One worker process, its answer queue and the tail of its stderr."""

    def __init__(self, start_timeout: float):
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", WORKER_PATH, *_library_paths()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except (OSError, ValueError) as error:
            raise _WorkerFailed(f"cannot start the template worker: {error}") from None
        # Killed when this object is collected or at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _kill, self.process)
        self.answers: queue.Queue = queue.Queue()
        self.stderr: collections.deque = collections.deque(maxlen=5)
        self._thread(_read_answers, self.process.stdout, self.answers)
        self._thread(_drain, self.process.stderr, self.stderr)
        try:
            started = self._next_answer(
                start_timeout, f"the template worker did not start within {start_timeout:g} s"
            )
            if started.get("ready") is not True:
                raise _WorkerFailed("the template worker did not start properly")
        except _WorkerFailed:
            self.kill()
            raise

    def _thread(self, target, *args) -> None:
        name = f"SafePause template worker {self.process.pid} {target.__name__}"
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self._finalizer()  # runs _kill once

    def ask(self, request: dict, timeout: float) -> dict:
        payload = json.dumps(request, ensure_ascii=True).encode("ascii") + b"\n"
        try:
            # Between requests the worker is always reading stdin, so this does not block for long.
            self.process.stdin.write(payload)
            self.process.stdin.flush()
        except (OSError, ValueError):
            raise _WorkerFailed(self._death("while reading the request")) from None
        answer = self._next_answer(timeout, f"took longer than {timeout:g} s (stopped)")
        if answer.get("id") != request["id"]:
            raise _WorkerFailed(
                f"the template worker answered request {answer.get('id')!r}, not {request['id']}"
            )
        return answer

    def _next_answer(self, timeout: float, late: str) -> dict:
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise _WorkerFailed(late) from None
        if line is None:
            raise _WorkerFailed(self._death("before answering"))
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _WorkerFailed(f"the template worker answered garbage: {line[:80]!r}")
        return answer

    def _death(self, when: str) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        last = f": {self.stderr[-1]}" if self.stderr else ""
        return f"the template worker died {when} (exit code {self.process.returncode}){last}"


class TemplateRunner:
    """Renders templates like templates_gcode.render / check, in a worker process, within `timeout`."""

    def __init__(self, timeout: float = 2.0, start_timeout: float = START_TIMEOUT):
        if not (timeout > 0 and start_timeout > 0):
            raise ValueError("timeouts must be positive numbers of seconds")
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._ids = itertools.count(1)

    def render(self, text: str, context: Mapping[str, Any], name: str = "template") -> list[str]:
        """The G-code lines of `text` (see templates_gcode.render); TemplateError on any failure,
        including a worker that took longer than `timeout` (it is killed) or died."""
        if not text or not text.strip():
            return []
        request = {"op": "render", "text": text, "context": json_safe(dict(context)), "name": name}
        return [str(line) for line in self._ask(request, name)["lines"]]

    def check(self, text: str, name: str = "template") -> str | None:
        """The compile error message of `text` (see templates_gcode.check), or None."""
        if not text or not text.strip():
            return None
        try:
            self._ask({"op": "check", "text": text, "name": name}, name)
        except TemplateError as error:
            return str(error)
        return None

    def start(self) -> None:
        """Starts the worker now rather than at the first request (which then pays for it)."""
        with self._lock:
            self._running_worker("template")

    def close(self) -> None:
        """Kills the worker at once, without waiting for a render in progress (it fails); a later
        request starts a new worker."""
        self._stop()

    @property
    def worker_pid(self) -> int | None:
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive() else None

    def __enter__(self) -> TemplateRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _ask(self, request: dict, name: str) -> dict:
        with self._lock:
            worker = self._running_worker(name)
            request = dict(request, id=next(self._ids), timeout=self.timeout)
            try:
                answer = worker.ask(request, self.timeout)
            except _WorkerFailed as failure:
                self._stop()
                raise TemplateError(str(failure), None, name) from None
            if answer.get("restart"):
                self._stop()  # it ran out of memory and exits: the next request starts a new one
        if "error" in answer:
            lineno = answer.get("lineno")
            raise TemplateError(str(answer["error"]), lineno if isinstance(lineno, int) else None, name)
        if not isinstance(answer.get("lines"), list):
            raise TemplateError("the template worker answered without lines", None, name)
        return answer

    def _running_worker(self, name: str) -> _Worker:
        if self._worker is not None and not self._worker.alive():
            self._stop()
        if self._worker is None:
            try:
                self._worker = _Worker(self.start_timeout)
            except _WorkerFailed as failure:
                raise TemplateError(str(failure), None, name) from None
        return self._worker

    def _stop(self) -> None:
        worker, self._worker = self._worker, None  # one step under the GIL: close() may race a render
        if worker is not None:
            worker.kill()
