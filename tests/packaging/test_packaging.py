"""Packaging: what pip, OctoPrint's Plugin Manager and the release archive make of this repository.

Fast tests: the plugin repository listing (extras/safepause.md) against setup.py, setup.py's imports, and
the release-archive builder (scripts/archive.py) on a scratch git repository.

Slow tests (marked `packaging`) share one module-scoped fixture, `installed`, that does what a user's
machine does, with pip's defaults throughout (isolated builds, pip's cache):
  1. the release zip from scripts/archive.py (the files git tracks, working-tree contents);
  2. `python -m build` on the zip's tree: the sdist, then the wheel built from that sdist;
  3. a fresh venv with OctoPrint 1.11.8, then `pip install <zip>` (what the Plugin Manager runs);
  4. `octoprint serve` from that venv in the project's offline sandbox (127.0.0.1).
Nothing is mocked and nothing skips: a missing file or a failing build fails the tests. The phases'
durations are printed at the end and written to test-artifacts/packaging/, with the server's logs.
"""

from __future__ import annotations

import ast
import gettext
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import archive  # noqa: E402  (scripts/archive.py)
import sandbox as sandbox_module  # noqa: E402  (scripts/sandbox.py)

PACKAGE = "octoprint_safepause"
OCTOPRINT_PIN = "OctoPrint==1.11.8"
LISTING = REPO / "extras" / "safepause.md"
ARTIFACTS = REPO / "test-artifacts" / "packaging"
LISTING_KEYS = (
    "layout", "title", "id", "description", "authors", "license", "date", "homepage", "source", "archive",
    "tags", "screenshots", "featuredimage", "compatibility",
)  # fmt: skip
# The web assets OctoPrint serves (each view model is a file of its own): all must ship and be served.
STATIC = tuple(
    sorted(str(p.relative_to(REPO / PACKAGE / "static")) for p in (REPO / PACKAGE / "static").rglob("*") if p.is_file())
)
# What the installed plugin cannot work without, whatever else git tracks in the package.
MUST_SHIP = (
    "__init__.py",
    "adapter/octoprint_port.py",
    "core/controller.py",
    "core/gcode/__init__.py",
    "core/gcode/state.py",
    "core/recovery/service.py",
    "core/template_worker.py",
    *(f"static/{name}" for name in STATIC),
    "templates/safepause_sidebar.jinja2",
    "templates/safepause_settings.jinja2",
    "translations/de/LC_MESSAGES/messages.mo",
    "translations/de/LC_MESSAGES/messages.po",
)
# Never in the wheel (the sdist may carry the build files, not these either).
JUNK = re.compile(
    r"(^|/)(tests|\.venv|test-artifacts|dist|build|benchmarks|scripts|extras|\.git)/|__pycache__|\.pyc$"
)
PLUGIN_LOG_LINE = re.compile(r"^\|\s+SafePause \((?P<version>[^)]*)\) = (?P<path>\S+)\s*$", re.MULTILINE)
SUBPROCESS_TIMEOUT = 900  # s: one pip or build step; a hang fails instead of blocking CI
# The sandbox's config disables the Plugin Manager (it goes online); this test needs its plugin list. It gets
# empty, fresh caches of the plugin repository and notices, so it fetches nothing; should it try, the
# addresses are a closed local port.
DEAD = sandbox_module.DEAD_PROXY


# ---------------------------------------------------------------------------------------------------------
# setup.py, read without running it


def setup_tree() -> ast.Module:
    return ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))


def setup_value(name: str):
    return archive.setup_value(REPO, name)


def octoprint_specifier() -> str:
    """The version specifier of setup.py's OctoPrint requirement, e.g. ">=1.10.0"."""
    (requirement,) = [r for r in setup_value("plugin_requires") if re.match(r"octoprint\b", r, re.I)]
    return requirement[len("OctoPrint") :].strip()


def package_files(tree: Path) -> list[str]:
    """The package's files under `tree`, relative to the package folder."""
    base = tree / PACKAGE
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def must_ship(tree: Path) -> list[str]:
    """What every distribution must carry: the package's tracked files (the archive's tree) and MUST_SHIP."""
    return sorted(set(package_files(tree)) | set(MUST_SHIP))


# ---------------------------------------------------------------------------------------------------------
# fast: the listing for plugins.octoprint.org


def front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path} does not start with front matter"
    head, separator, body = text[4:].partition("\n---\n")
    assert separator, f"{path}: front matter is not closed by ---"
    return yaml.safe_load(head), body


def test_listing_has_every_key_and_a_body():
    data, body = front_matter(LISTING)
    assert [k for k in LISTING_KEYS if not data.get(k)] == []
    assert [k for k in ("octoprint", "os", "python") if not data["compatibility"].get(k)] == []
    assert data["layout"] == "plugin"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(data["date"]))
    assert all(s.get("url") and s.get("alt") for s in data["screenshots"])
    assert len(body.split()) > 100, "the listing's page text is missing"


def test_listing_matches_setup_py():
    data, _ = front_matter(LISTING)
    assert data["id"] == setup_value("plugin_identifier")
    assert data["description"] == setup_value("plugin_description")
    assert data["license"] == setup_value("plugin_license")
    assert data["compatibility"]["octoprint"] == [octoprint_specifier()] == [">=1.10.0"]
    python = setup_value("additional_setup_parameters")["python_requires"]
    assert data["compatibility"]["python"] == python == ">=3.9,<4"


def test_project_address_lives_in_setup_py_only():
    """homepage, source and archive derive from setup.py's plugin_url; the listing names no other address."""
    url = setup_value("plugin_url")
    data, _ = front_matter(LISTING)
    assert data["homepage"] == data["source"] == url
    assert data["archive"].startswith(url + "/") and data["archive"].endswith(".zip")
    assert urlparse(url).scheme == "https" and urlparse(url).hostname
    addresses = re.findall(r"https?://[^\s\"')]+", yaml.safe_dump(data))
    assert [a for a in addresses if not a.startswith(url)] == []


def test_listing_screenshots_are_in_the_repository():
    data, _ = front_matter(LISTING)
    urls = [s["url"] for s in data["screenshots"]] + [data["featuredimage"]]
    for url in urls:
        assert url.startswith("/assets/img/plugins/safepause/"), url  # uploaded with the listing
        path = REPO / "extras" / url.lstrip("/")
        assert path.is_file(), f"{url}: {path} is missing"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        assert path.stat().st_size < 200_000, f"{path} is too large for the listing"


def test_setup_py_does_not_import_octoprint():
    """pip's isolated build has only pyproject's build requirements: OctoPrint is not among them."""
    imported = []
    for node in ast.walk(setup_tree()):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    assert [m for m in imported if m == "octoprint" or m.startswith("octoprint.")] == []


def test_version_lives_in_setup_py_only():
    sources = [p for p in (REPO / PACKAGE).rglob("*.py")]
    assert [p for p in sources if "__plugin_version__" in p.read_text(encoding="utf-8")] == []
    assert "version" not in front_matter(LISTING)[0]


# ---------------------------------------------------------------------------------------------------------
# fast: scripts/archive.py on a scratch repository


def git(root: Path, *args: str):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


def test_archive_has_the_tracked_files_as_in_the_working_tree(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "setup.py").write_text('plugin_name = "Demo-Plugin"\nplugin_version = "9.8.7"\n')
    for name in ("kept.txt", "gone.txt", "run.sh"):
        (root / name).write_text(f"{name} as committed\n")
    (root / "run.sh").chmod(0o755)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    (root / "kept.txt").write_text("edited, not committed\n")
    (root / "gone.txt").unlink()
    (root / "untracked.txt").write_text("not tracked\n")
    (root / "staged.txt").write_text("added, not committed\n")
    git(root, "add", "staged.txt")

    path = archive.build_archive(root, tmp_path / "out")

    assert path == tmp_path / "out" / "Demo-Plugin-9.8.7.zip"
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        top = "Demo-Plugin-9.8.7/"
        assert names == [top + n for n in ("kept.txt", "run.sh", "setup.py", "staged.txt")]
        assert z.read(top + "kept.txt") == b"edited, not committed\n"
        assert (z.getinfo(top + "run.sh").external_attr >> 16) & 0o111
        assert not (z.getinfo(top + "kept.txt").external_attr >> 16) & 0o111


def test_archive_fails_loudly_outside_a_git_checkout(tmp_path):
    (tmp_path / "setup.py").write_text('plugin_name = "Demo-Plugin"\nplugin_version = "1.0"\n')
    with pytest.raises(archive.ArchiveError, match="not a git checkout"):
        archive.build_archive(tmp_path, tmp_path / "out")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "archive.py"), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "not a git checkout" in done.stderr, done
    assert not (tmp_path / "out").exists() and not (tmp_path / "dist").exists()


# ---------------------------------------------------------------------------------------------------------
# slow: build, install, serve


def clean_env() -> dict:
    """This process's environment without what would make another interpreter see this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(args: list, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited with {done.returncode}:\n{output[-6000:]}")
    return output


class Phases:
    """Wall time of each phase of the fixture, for the report."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name, function, *args):
        t0 = time.monotonic()
        try:
            return function(*args)
        finally:
            self.seconds[name] = time.monotonic() - t0

    def lines(self) -> list[str]:
        total = sum(self.seconds.values())
        return [f"{name:<28}{s:7.1f} s" for name, s in self.seconds.items()] + [
            f"{'total':<28}{total:7.1f} s"
        ]


def extract(zip_path: Path, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(target)
    (top,) = target.iterdir()  # the one top folder, OctoPrint-SafePause-<version>
    return top


def build_dists(tree: Path, out: Path) -> tuple[Path, Path]:
    """sdist, then the wheel from that sdist (build's default), both in isolated environments."""
    run([sys.executable, "-m", "build", "--outdir", out, tree], cwd=out.parent)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def venv_with_octoprint(venv: Path) -> Path:
    run([sys.executable, "-m", "venv", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    # --no-compile: byte-compiling OctoPrint's dependencies is much of the time and not what is tested
    # (the plugin itself is installed below with pip's defaults)
    run([python, "-m", "pip", "install", "--no-compile", OCTOPRINT_PIN], cwd=venv)
    return python


def pip_install(python: Path, zip_path: Path):
    """As OctoPrint's Plugin Manager does: pip's defaults, so the zip is built in an isolated environment."""
    run([python, "-m", "pip", "install", zip_path], cwd=python.parents[1])


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(run([python, "-c", code], cwd=python.parent).strip())


def plugin_manager_on() -> dict:
    config = yaml.safe_load(sandbox_module.test_config_path().read_text())
    disabled = [p for p in config["plugins"]["_disabled"] if p != "pluginmanager"]
    local = {"repository": f"{DEAD}/plugins.json", "notices": f"{DEAD}/notices.json"}
    return {"plugins": {"_disabled": disabled, "pluginmanager": local}}


def start_server(venv: Path):
    sb = sandbox_module.Sandbox(octoprint=str(venv / "bin" / "octoprint"), extra_config=plugin_manager_on())
    sb.prepare()
    caches = sb.basedir / "data" / "pluginmanager"  # the Plugin Manager's data folder
    caches.mkdir(parents=True, exist_ok=True)
    for name in ("plugins.json", "notices.json"):
        (caches / name).write_text("[]")  # valid for repository_ttl/notices_ttl after their mtime
    sb.start(timeout=120)
    return sb


def plugin_errors(log: str) -> str:
    """The traceback OctoPrint logged when it could not load the plugin, for the failure message."""
    start = log.find("Error loading plugin safepause")
    return log[start : start + 4000] if start >= 0 else log[-3000:]


def stop_server(sb):
    sb.stop()
    for log in (sb.octoprint_log, sb.stdout_log):
        if log.exists():
            shutil.copyfile(log, ARTIFACTS / log.name)
    sb.cleanup()


def report(request, phases: Phases):
    (ARTIFACTS / "timings.txt").write_text("\n".join(phases.lines()) + "\n")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # as capsys.disabled(): shown even with -q
        reporter.write_line("")
        for line in ["packaging fixture:", *phases.lines()]:
            reporter.write_line("  " + line)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, request):
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    work = tmp_path_factory.mktemp("packaging")
    phases = Phases()
    sb = None
    try:
        zip_path = phases("release zip", archive.build_archive, REPO, work / "release")
        tree = extract(zip_path, work / "tree")
        (work / "dists").mkdir()
        sdist, wheel = phases("python -m build", build_dists, tree, work / "dists")
        venv = work / "venv"
        python = phases("fresh venv + OctoPrint", venv_with_octoprint, venv)
        phases("pip install <zip>", pip_install, python, zip_path)
        sb = phases("octoprint serve", start_server, venv)
        yield SimpleNamespace(
            zip=zip_path, tree=tree, sdist=sdist, wheel=wheel, python=python, venv=venv,
            site=site_packages(python), sandbox=sb,
        )  # fmt: skip
    finally:
        if sb is not None:
            stop_server(sb)
        report(request, phases)
        shutil.rmtree(work, ignore_errors=True)  # a venv with OctoPrint: ~200 MB per run


def fetch(sb, path: str, api_key: bool = False) -> tuple[int, bytes]:
    headers = {"X-Api-Key": sandbox_module.ADMIN[2]} if api_key else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    try:
        with opener.open(urllib.request.Request(sb.url + path, headers=headers), timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def german_catalog() -> gettext.GNUTranslations:
    with open(REPO / PACKAGE / "translations" / "de" / "LC_MESSAGES" / "messages.mo", "rb") as f:
        return gettext.GNUTranslations(f)


# Sentences only SafePause has (sidebar template): in German only when OctoPrint loaded the plugin's catalog.
OWN_MESSAGES = (
    "What SafePause is doing with the current print",
    "Park the head away from the part and hold the print",
)


class TestBuiltInstalledServed:
    """The slow part: every test here uses the one `installed` fixture."""

    # The first test's timeout also covers the module fixture's setup (about 1.5 minutes with pip's cache).
    pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1800)]

    # ----- the release zip and the built distributions

    def test_release_zip_is_the_tracked_tree(self, installed):
        assert installed.zip.name == f"OctoPrint-SafePause-{setup_value('plugin_version')}.zip"
        assert installed.tree.name == installed.zip.stem
        shipped = package_files(installed.tree)
        assert [f for f in MUST_SHIP if f not in shipped] == []
        assert (installed.tree / "setup.py").read_bytes() == (REPO / "setup.py").read_bytes()  # working tree
        assert not (installed.tree / ".venv").exists() and not (installed.tree / "test-artifacts").exists()

    def test_wheel_has_the_whole_package_and_nothing_else(self, installed):
        with zipfile.ZipFile(installed.wheel) as z:
            names = z.namelist()
            metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
            entry_points = z.read(
                next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
            ).decode()
        files = sorted(n[len(PACKAGE) + 1 :] for n in names if n.startswith(PACKAGE + "/"))
        assert [f for f in must_ship(installed.tree) if f not in files] == []
        assert [n for n in names if not n.startswith(PACKAGE + "/") and ".dist-info/" not in n] == []
        assert [n for n in names if JUNK.search(n)] == []
        version, url = setup_value("plugin_version"), setup_value("plugin_url")
        assert re.search(r"^Name: OctoPrint-SafePause$", metadata, re.M)
        assert re.search(rf"^Version: {re.escape(version)}$", metadata, re.M)
        assert re.search(rf"^Requires-Dist: OctoPrint\s*{re.escape(octoprint_specifier())}$", metadata, re.M)
        assert re.search(r"^Requires-Python: >=3.9,<4$", metadata, re.M)
        assert re.search(rf"^Home-page: {re.escape(url)}$", metadata, re.M)
        assert re.search(rf"^safepause = {PACKAGE}$", entry_points, re.M)

    def test_sdist_has_the_whole_package_and_its_build_files(self, installed):
        with tarfile.open(installed.sdist) as t:
            names = [m.name.split("/", 1)[1] for m in t.getmembers() if m.isfile() and "/" in m.name]
        expected = [f"{PACKAGE}/{f}" for f in must_ship(installed.tree)]
        expected += ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "PKG-INFO"]
        assert [f for f in expected if f not in names] == []
        assert [n for n in names if JUNK.search(n)] == []

    # ----- the zip installed with pip's defaults into a fresh venv

    def test_pip_installed_the_zip_into_the_fresh_venv(self, installed):
        show = run([installed.python, "-m", "pip", "show", "OctoPrint-SafePause"], cwd=installed.venv)
        assert re.search(rf"^Version: {re.escape(setup_value('plugin_version'))}$", show, re.M)
        assert re.search(rf"^Location: {re.escape(str(installed.site))}$", show, re.M)
        code = f"import {PACKAGE}; print({PACKAGE}.__file__)"  # imports OctoPrint too: the real import
        origin = Path(run([installed.python, "-c", code], cwd=installed.venv).strip().splitlines()[-1])
        assert origin == installed.site / PACKAGE / "__init__.py"
        assert REPO not in origin.parents
        on_disk = package_files(installed.site)
        assert [f for f in must_ship(installed.tree) if f not in on_disk] == []

    # ----- OctoPrint from the fresh venv

    def test_octoprint_loads_the_installed_plugin_with_its_metadata(self, installed):
        sb = installed.sandbox
        log = sb.log_text()
        logged = {m["version"]: Path(m["path"]) for m in PLUGIN_LOG_LINE.finditer(log)}
        assert logged == {setup_value("plugin_version"): installed.site / PACKAGE}, plugin_errors(log)

        status, listing = sb.api("GET", "/plugin/pluginmanager/plugins")
        assert status == 200, listing
        (plugin,) = [p for p in listing["plugins"] if p["key"] == "safepause"]
        assert plugin["enabled"] and not plugin["incompatible"] and not plugin["bundled"]
        assert plugin["origin"] == "entry_point"
        # From the installed distribution's metadata: setup.py is the one place of version and address.
        assert plugin["version"] == setup_value("plugin_version")
        assert plugin["url"] == setup_value("plugin_url")

        status, settings = sb.api("GET", "/api/settings")
        assert status == 200 and "safepause" in settings["plugins"]
        status, state = sb.api("GET", "/api/plugin/safepause")
        assert status == 200 and "state" in state, state

    def test_octoprint_serves_the_static_files(self, installed):
        assert "css/safepause.css" in STATIC and "js/safepause_sidebar.js" in STATIC
        for name in STATIC:
            status, body = fetch(installed.sandbox, f"/plugin/safepause/static/{name}")
            assert status == 200, name
            assert body == (REPO / PACKAGE / "static" / name).read_bytes(), name

    def test_octoprint_renders_the_templates(self, installed):
        status, page = fetch(installed.sandbox, "/", api_key=True)  # the API key logs the admin in
        assert status == 200
        page = html.unescape(page.decode())
        sidebar = (
            'id="sidebar_plugin_safepause"',
            'data-test-id="safepause-sidebar"',
            'id="safepause_resume"',
        )
        assert [marker for marker in sidebar if marker not in page] == []
        assert 'id="settings_plugin_safepause"' in page and 'id="safepause_firmware"' in page
        assert [message for message in OWN_MESSAGES if message not in page] == []

    def test_the_german_translation_is_installed_and_used(self, installed):
        folder = Path("translations") / "de" / "LC_MESSAGES"
        for name in ("messages.mo", "messages.po"):
            shipped = (installed.site / PACKAGE / folder / name).read_bytes()
            assert shipped == (REPO / PACKAGE / folder / name).read_bytes(), name

        german = german_catalog()
        expected = [german.gettext(m) for m in OWN_MESSAGES]
        assert [m for m, g in zip(OWN_MESSAGES, expected) if g == m] == [], "not translated in the catalog"
        status, page = fetch(installed.sandbox, "/?l10n=de", api_key=True)  # templates use the .mo
        assert status == 200
        page = html.unescape(page.decode())
        assert [g for g in expected if g not in page] == []

        status, script = fetch(
            installed.sandbox, "/i18n/de/messages.js"
        )  # JavaScript: OctoPrint reads the .po
        assert status == 200
        text = script.decode()
        served = json.loads(text[text.index("{") : text.rindex("}") + 1])["messages"]
        assert [m for m in OWN_MESSAGES if served.get(m) != german.gettext(m)] == []
