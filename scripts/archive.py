#!/usr/bin/env python3
"""Release archive: dist/OctoPrint-SafePause-<version>.zip, like a forge's branch archive.

The files are the ones git tracks (`git ls-files`), read from the working tree so that uncommitted
edits are in it, under one top folder `OctoPrint-SafePause-<version>/`. This is what OctoPrint's Plugin
Manager and `pip install <zip>` get, so the packaging test installs exactly this.

    python scripts/archive.py            # prints the path of the zip
    from archive import build_archive    # build_archive(root, out_dir) -> Path

Standard library only; needs the git command and a git checkout.
"""

from __future__ import annotations

import argparse
import ast
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


class ArchiveError(RuntimeError):
    pass


def setup_value(root: Path, name: str):
    """A literal that setup.py assigns (plugin_name, plugin_version, ...), read without running setup.py:
    running it needs its build requirements."""
    tree = ast.parse((root / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                break
    raise ArchiveError(f"setup.py assigns no literal {name}")


def _top_folder(root: Path) -> str:
    name, version = setup_value(root, "plugin_name"), setup_value(root, "plugin_version")
    if not (isinstance(name, str) and isinstance(version, str) and name and version):
        raise ArchiveError("setup.py's plugin_name and plugin_version must be non-empty strings")
    return f"{name}-{version}"


def _git(root: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)
    except FileNotFoundError as e:
        raise ArchiveError("the git command is not installed") from e
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise ArchiveError(f"{root} is not a git checkout ({message})")
    return done.stdout


def tracked_files(root: Path) -> list[str]:
    """Paths git tracks at `root`, which must be the top of its checkout (not a folder inside another one)."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").decode().strip())
    if top.resolve() != root.resolve():
        raise ArchiveError(f"{root} is not a git checkout (it lies inside the checkout {top})")
    names = _git(root, "ls-files", "-z").decode().split("\0")
    # A tracked file deleted in the working tree is an uncommitted deletion: it stays out.
    return sorted(n for n in names if n and (root / n).is_file())


def _entry(arcname: str, path: Path) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=max(ZIP_EPOCH, time.localtime(path.stat().st_mtime)[:6]))
    executable = path.stat().st_mode & stat.S_IXUSR
    info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16  # as git archive does
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_archive(root: Path = REPO, out_dir: Path | None = None) -> Path:
    """Write <out_dir or root/dist>/<plugin_name>-<plugin_version>.zip and return its path."""
    root = Path(root)
    files = tracked_files(root)
    if not files:
        raise ArchiveError(f"git tracks no files in {root}")
    top = _top_folder(root)
    out_dir = Path(out_dir) if out_dir else root / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{top}.zip"
    partial = target.with_name(target.name + ".partial")  # never leave a half-written zip under the name
    with zipfile.ZipFile(partial, "w") as archive:
        for name in files:
            path = root / name
            archive.writestr(_entry(f"{top}/{name}", path), path.read_bytes())
    os.replace(partial, target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the git checkout (default: this one)")
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/dist)")
    args = parser.parse_args(argv)
    try:
        print(build_archive(args.root, args.out))
    except ArchiveError as e:
        print(f"archive.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
