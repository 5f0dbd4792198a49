"""Fixtures for the in-process integration tests (real Printer + MachineCom + VirtualPrinter, see rig.py).

`rig_session`: the one process-wide rig (OctoPrint's singletons allow only one), connected.
`rig`: the same rig, reset before and after each test (hooks and callbacks removed, print ended, leaked
holds released, file deselected, captures cleared, reconnected if the test broke the connection).
`port`: the plugin's real printer port (`OctoPrintPort`) over the rig's Printer, as the plugin builds it.
On failure the rig's logs and the captured line stream go to test-artifacts/integration/<test>/.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rig import REPO, Rig  # noqa: E402

ARTIFACTS = REPO / "test-artifacts" / "integration"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def rig_session(tmp_path_factory):
    rig = Rig.instance(basedir=tmp_path_factory.mktemp("octoprint-rig"))
    rig.connect()
    yield rig
    rig.shutdown()


@pytest.fixture
def rig(rig_session, request):
    rig_session.reset()
    rig_session.connect()  # default connection: reconnects only if a test changed speed/virtual settings
    yield rig_session
    failed = any(
        getattr(request.node, f"rep_{when}", None) and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    if failed:
        _save_artifacts(rig_session, request.node.name)
    rig_session.reset()


@pytest.fixture
def port(rig):
    return rig.port()


def _save_artifacts(rig: Rig, name: str):
    target = ARTIFACTS / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for log in rig.logs.glob("*.log"):
        shutil.copyfile(log, target / log.name)
    lines = [
        f"{r.n}\t{r.cmd}\t{sorted(r.tags) if r.tags else r.tags}\tresends={r.resends}" for r in rig.records()
    ]
    (target / "received.tsv").write_text("\n".join(lines) + "\n")
    (target / "diagnose.txt").write_text(rig.diagnose() + "\n")
