#!/usr/bin/env python3
"""A throw-away, offline OctoPrint server with the virtual printer, for the demo and the e2e tests.

Runs `octoprint serve` from a temporary base directory seeded with the project's offline test config,
two users with fixed API keys (set before the first start: OctoPrint does not re-read users.yaml), the
printer profile of every machine the repository's slicer files were made for (scripts/corpus.py), and
optionally those files.

    with Sandbox(files=[gcode]) as sb:               # started, /api/version answers
        sb.connect(profile="corpus_210x210x205")     # VIRTUAL, waits for Operational
        status, body = sb.api("GET", "/api/job")
        status, _ = sb.api("POST", "/api/job", {"command": "start"}, user="viewer")   # 403

As a script (what scripts/serve.sh runs): start, connect, print the URL and credentials, serve until
Ctrl-C, then stop and remove the base directory (unless --keep).

Standard library only, plus OctoPrint's own password hashing when this interpreter has OctoPrint
(otherwise the `octoprint user add` CLI is used, ~1.5 s per user).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import corpus  # scripts/corpus.py: the repository's G-code, unpacked on first use

REPO = Path(__file__).resolve().parents[1]


ADMIN = ("admin", "test", "SAFEPAUSE_TEST_APIKEY_0123456789abcdefABCDEF")
# read-only group: may look, may not print/pause/cancel (no PRINT permission), for permission tests
VIEWER = ("viewer", "viewer", "SAFEPAUSE_VIEWER_APIKEY_0123456789abcdefABCDEF")
USERS = {"admin": ADMIN, "viewer": VIEWER}
DEAD_PROXY = "http://127.0.0.1:9"  # discard port, nothing listens there
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via a proxy


def test_config_path() -> Path:
    """The offline config every OctoPrint we start begins from (a copy of the project's reference one)."""
    return REPO / "scripts" / "octoprint-test-config.yaml"


def _merge(base: dict, extra: dict) -> dict:
    result = dict(base)
    for key, value in extra.items():
        result[key] = (
            _merge(result[key], value)
            if isinstance(value, dict) and isinstance(result.get(key), dict)
            else value
        )
    return result


# ---------------------------------------------------------------------------------------------------------
# the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(fields: dict, file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Sandbox:
    """One `octoprint serve` in a temporary base directory. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        port: int | None = None,
        octoprint: str | None = None,
        files: tuple = (),
        plugins: tuple = (),
        extra_config: dict | None = None,
        keep: bool = False,
        basedir: str | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.octoprint = octoprint or str(Path(sys.executable).parent / "octoprint")  # no resolve(): venv
        self.files = [Path(f) for f in files]
        self.plugins = [Path(p) for p in plugins]  # single-file plugins for <basedir>/plugins/ (test helpers)
        self.extra_config = extra_config
        self.keep = keep
        self.basedir = Path(basedir) if basedir else Path(tempfile.mkdtemp(prefix="safepause-sandbox-"))
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    # ----- paths

    @property
    def octoprint_log(self) -> Path:
        return self.basedir / "logs" / "octoprint.log"

    @property
    def serial_log(self) -> Path:
        return self.basedir / "logs" / "serial.log"

    @property
    def stdout_log(self) -> Path:
        return self.basedir / "logs" / "stdout.log"

    # ----- lifecycle

    def prepare(self):
        """Everything that must be on disk before the first start."""
        self.basedir.mkdir(parents=True, exist_ok=True)
        (self.basedir / "logs").mkdir(exist_ok=True)
        config = self.basedir / "config.yaml"
        shutil.copyfile(test_config_path(), config)
        if self.extra_config:
            import yaml  # PyYAML: an OctoPrint dependency

            data = yaml.safe_load(config.read_text()) or {}
            config.write_text(yaml.safe_dump(_merge(data, self.extra_config), sort_keys=False))
        profiles = self.basedir / "printerProfiles"
        profiles.mkdir(exist_ok=True)
        for identifier, profile in corpus.printer_profiles().items():  # one per corpus machine
            (profiles / f"{identifier}.profile").write_text(json.dumps(profile, indent=2))  # JSON is YAML
        uploads = self.basedir / "uploads"
        uploads.mkdir(exist_ok=True)
        for path in self.files:
            shutil.copyfile(path, uploads / path.name)  # OctoPrint lists what is in uploads/ at start
        (self.basedir / "plugins").mkdir(exist_ok=True)
        for path in self.plugins:
            shutil.copyfile(path, self.basedir / "plugins" / path.name)
        self._write_users()

    def _write_users(self):
        try:
            from octoprint.access.users import UserManager
        except ImportError:
            self._add_users_with_cli()
            return
        users = {"_version": 2}
        for name, password, apikey in USERS.values():
            users[name] = {
                "active": True,
                "apikey": apikey,
                "groups": ["admins", "users"] if name == "admin" else ["readonly"],
                "password": UserManager.create_password_hash(password),
                "permissions": [],
                "settings": {},
            }
        (self.basedir / "users.yaml").write_text(json.dumps(users, indent=2))

    def _add_users_with_cli(self):
        base = [self.octoprint, "--basedir", str(self.basedir)]
        for name, password, _ in USERS.values():
            admin = ["--admin"] if name == "admin" else []
            subprocess.run(
                [*base, "user", "add", name, "--password", password, *admin], check=True, capture_output=True
            )
        import yaml

        path = self.basedir / "users.yaml"
        data = yaml.safe_load(path.read_text())
        for name, _, apikey in USERS.values():
            data[name]["apikey"] = apikey
        data["viewer"]["groups"] = ["readonly"]
        path.write_text(yaml.safe_dump(data))

    def start(self, timeout: float = 60.0) -> Sandbox:
        if not (self.basedir / "config.yaml").exists():
            self.prepare()
        cmd = [
            self.octoprint,
            "serve",
            "--basedir",
            str(self.basedir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--iknowwhatimdoing")  # OctoPrint refuses to run as root otherwise
        # Offline guard: any HTTP(S) request OctoPrint makes goes to a closed local port and fails (and is
        # logged) instead of reaching the network; everything that goes online is disabled in the config.
        env = dict(os.environ, http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY)
        env.update(HTTPS_PROXY=DEAD_PROXY, no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
        t0 = time.monotonic()
        with open(self.stdout_log, "ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = t0 + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"octoprint exited with {self.process.returncode}; see {self.stdout_log}")
            try:
                status, _ = self.api("GET", "/api/version", timeout=2)
                if status == 200:
                    break
            except (OSError, http.client.HTTPException):
                # not listening yet, or OctoPrint's intermediary startup server, whose 404 has no
                # header block (http.client raises BadStatusLine on it)
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"octoprint did not answer /api/version within {timeout}s")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 15.0):
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: OctoPrint shuts down cleanly (Shutdown event, settings saved)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self):
        """SIGKILL: OctoPrint dies at once, nothing of its own or of its plugins runs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 60.0, kill: bool = False) -> Sandbox:
        """Stop OctoPrint (SIGTERM, or SIGKILL with `kill`) and start it again on the same base directory
        and port: its settings, uploads, users and plugin data (e.g. print_recovery_data.yaml, the
        plugins' data folders) are kept."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout=timeout)

    def cleanup(self):
        self.stop()
        if not self.keep:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()

    # ----- REST

    def api(self, method: str, path: str, json_body=None, user: str | None = "admin", timeout: float = 30.0):
        """(status, parsed JSON or text or None). `user=None` sends no API key."""
        headers = {}
        if user is not None:
            headers["X-Api-Key"] = USERS[user][2]
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        return self._request(method, path, data, headers, timeout)

    def _request(self, method, path, data, headers, timeout):
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return response.status, _decode(response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read(), e.headers.get("Content-Type", ""))

    def upload(self, path, select: bool = False, print_: bool = False, user: str = "admin"):
        """POST /api/files/local (multipart)."""
        fields = {"select": str(select).lower(), "print": str(print_).lower()}
        body, content_type = _multipart(fields, "file", Path(path))
        headers = {"X-Api-Key": USERS[user][2], "Content-Type": content_type}
        return self._request("POST", "/api/files/local", body, headers, 120)

    def connect(self, profile: str | None = None, timeout: float = 20.0):
        body = {"command": "connect", "port": "VIRTUAL", "baudrate": 115200}
        if profile:
            body["printerProfile"] = profile
        deadline = time.monotonic() + timeout
        while True:
            status, reply = self.api("POST", "/api/connection", body)
            if status != 204:
                raise RuntimeError(f"connect: HTTP {status} {reply}")
            try:
                return self.wait_state("Operational", timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                # OctoPrint ignores a connect while it is still tearing down a connection that failed
                # (Printer.connect returns when its old comm is still set): ask again
                if time.monotonic() > deadline or not self.state().startswith(("Offline", "Closed", "Error")):
                    return self.wait_state("Operational", timeout=max(0.1, deadline - time.monotonic()))

    def disconnect(self):
        return self.api("POST", "/api/connection", {"command": "disconnect"})

    def state(self) -> str:
        status, reply = self.api("GET", "/api/connection")
        return reply["current"]["state"] if status == 200 else f"HTTP {status}"

    def wait_state(self, *states: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if any(state.startswith(s) for s in states):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"state {state!r} not in {states} after {timeout}s")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.octoprint_log.read_text(errors="replace") if self.octoprint_log.exists() else ""


def _decode(raw: bytes, content_type: str):
    if not raw:
        return None
    if "json" in content_type:
        return json.loads(raw)
    return raw.decode(errors="replace")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Start a throw-away OctoPrint with the virtual printer.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    parser.add_argument("--keep", action="store_true", help="keep the base directory after stopping")
    parser.add_argument("--octoprint", help="path of the octoprint executable (default: next to this python)")
    parser.add_argument("--no-files", action="store_true", help="do not add the corpus G-code files")
    parser.add_argument(
        "--profile",
        default="corpus_ender3_220x220x250",
        choices=sorted(corpus.MACHINES),
        help="printer profile to connect with",
    )
    args = parser.parse_args(argv)

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", args.port))
        except OSError:
            sys.exit(f"Port {args.port} on 127.0.0.1 is in use; set PORT=<another port>.")
    files = [] if args.no_files else corpus.gcode_files()
    sandbox = Sandbox(port=args.port, octoprint=args.octoprint, files=files, keep=args.keep)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"Starting OctoPrint in {sandbox.basedir} ...", flush=True)
        sandbox.start()
        sandbox.connect(profile=args.profile)
        status, plugins = sandbox.api("GET", "/api/settings")
        loaded = "safepause" in ((plugins or {}).get("plugins") or {}) if status == 200 else False
        print(
            f"\nOctoPrint is up after {sandbox.start_seconds:.1f} s, virtual printer connected.\n"
            f"  URL:      {sandbox.url}\n"
            f"  Login:    {ADMIN[0]} / {ADMIN[1]}\n"
            f"  API key:  {ADMIN[2]}\n"
            f"  Viewer:   {VIEWER[0]} / {VIEWER[1]} (read-only, API key {VIEWER[2]})\n"
            f"  Files:    {len(files)} real slicer files (tests/gcode); printer profiles for each build volume\n"
            f"  Plugin:   safepause {'loaded' if loaded else 'NOT loaded (is the plugin installed?)'}\n"
            f"  Logs:     {sandbox.octoprint_log}\n"
            f"            {sandbox.serial_log}\n"
            "Ctrl-C stops the server"
            + (" (base directory kept)." if args.keep else " and removes the base directory."),
            flush=True,
        )
        while sandbox.process is not None and sandbox.process.poll() is None:
            time.sleep(0.5)
        tail = sandbox.stdout_log.read_text(errors="replace").splitlines()[-20:]
        print("octoprint exited unexpectedly; its last output:", *tail, sep="\n", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping OctoPrint ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        sandbox.cleanup()
        if args.keep:
            print(f"Kept {sandbox.basedir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
