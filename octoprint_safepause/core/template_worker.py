"""Renders users' G-code templates in a separate process, so that no template can stall or exhaust
the OctoPrint process: the parent (template_runner.py) kills this process at its deadline.

Protocol, one JSON object per line (ASCII) on stdin and stdout:
  started:  -> {"ready": true}
  request:  <- {"id": n, "op": "render" | "check", "text": str, "context": {...}, "name": str,
                "timeout": seconds (optional, sizes the CPU backstop)}
  answer:   -> {"id": n, "lines": [str, ...]}           ("check": [] when the template compiles)
            -> {"id": n, "error": str, "lineno": int | null}
            with "restart": true after running out of memory: the process exits after answering
            (its heap may stay fragmented and full) and the parent starts a new one.
End of stdin ends the process.

Run as `python -I template_worker.py [extra sys.path entries...]`. It imports only the standard
library, jinja2 and templates_gcode.py, loaded by file location: the octoprint_safepause package
imports OctoPrint and Flask, far too slow to start. The extra path entries are where the parent found
jinja2 (-I drops the user site directory, where a `pip install --user` OctoPrint keeps it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys

# Address space: a memory bomb ends as a MemoryError, not as swapping. The worker starts at ~25 MB and
# a legitimate template needs a few more; 256 MB stays clear of what a 512 MB Raspberry Pi can spare.
MAX_MEMORY = 256 * 1024 * 1024
CPU_BACKSTOP = 2  # s of CPU beyond a request's timeout: ends a worker whose parent died mid-render
MODULE_NAME = "safepause_templates_gcode"

try:
    import resource
except ImportError:  # Windows: no limits; the parent's deadline still applies
    resource = None


def limit_memory() -> None:
    if resource is None:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MAX_MEMORY if hard == resource.RLIM_INFINITY else min(hard, MAX_MEMORY)
    with contextlib.suppress(ValueError, OSError):  # some platforms (macOS) refuse RLIMIT_AS
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def limit_cpu(timeout: float) -> None:
    """The parent kills us at its deadline; if it died first, SIGXCPU ends a runaway render."""
    if resource is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + timeout) + CPU_BACKSTOP
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def load_templates():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates_gcode.py")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def answer(request_id, templates, request: dict) -> dict:
    text, name = request.get("text") or "", request.get("name") or "template"
    try:
        if request.get("op") == "check":
            templates.compile_template(text, name)
            return {"id": request_id, "lines": []}
        return {"id": request_id, "lines": templates.render(text, request.get("context") or {}, name)}
    except templates.TemplateError as error:
        out_of_memory = error.message == templates.OUT_OF_MEMORY
        return {"id": request_id, "error": error.message, "lineno": error.lineno, "restart": out_of_memory}


def handle(templates, raw: bytes) -> dict:
    try:
        request = json.loads(raw)
        request_id = request.get("id")
    except (ValueError, AttributeError) as error:
        return {"id": None, "error": f"bad request: {error}", "lineno": None}
    try:
        limit_cpu(float(request.get("timeout") or 10))
        return answer(request_id, templates, request)
    except Exception as error:  # a MemoryError outside the template, a malformed request
        message = f"{type(error).__name__}: {error}"[:300]
        return {"id": request_id, "error": message, "lineno": None, "restart": isinstance(error, MemoryError)}


def main() -> None:
    limit_memory()
    sys.path.extend(path for path in sys.argv[1:] if path not in sys.path)
    templates = load_templates()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b'{"ready": true}\n')
    stdout.flush()
    for raw in stdin:
        reply = handle(templates, raw)
        stdout.write(json.dumps(reply).encode("ascii") + b"\n")
        stdout.flush()
        if reply.get("restart"):
            return


if __name__ == "__main__":
    main()
