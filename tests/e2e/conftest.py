"""Fixtures for end-to-end tests against a real `octoprint serve` (scripts/sandbox.py).

`sandbox`: one server per session, started with the `octoprint` of the interpreter running the tests
(the plugin must be installed there, e.g. `pip install -e .`), the single-file test plugins of
tests/e2e/plugins/ loaded, the virtual printer connected.
Its octoprint.log, serial.log and stdout are copied to test-artifacts/e2e/ when the session ends.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import sandbox as sandbox_module  # noqa: E402

ARTIFACTS = REPO / "test-artifacts" / "e2e"


@pytest.fixture(scope="session")
def sandbox():
    octoprint = Path(sys.executable).parent / "octoprint"  # same venv as the tests, not resolved
    if not octoprint.exists():
        pytest.fail(f"{octoprint} not found: run the e2e tests with the interpreter of OctoPrint's venv")
    helpers = sorted((Path(__file__).parent / "plugins").glob("*.py"))  # test-only plugins, if any
    sb = sandbox_module.Sandbox(octoprint=str(octoprint), plugins=helpers)
    try:
        sb.start()
        sb.connect(profile="shared_210x210x205")
        yield sb
    finally:
        sb.stop()
        _save_artifacts(sb)
        sb.cleanup()


def _save_artifacts(sb):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for log in (sb.octoprint_log, sb.serial_log, sb.stdout_log):
        if log.exists():
            shutil.copyfile(log, ARTIFACTS / log.name)
