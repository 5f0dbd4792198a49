#!/usr/bin/env bash
# Creates ./.venv (once) with OctoPrint 1.11.8, this plugin (editable) and, with "test", the test tools.
# Sourced by serve.sh and test.sh so that both work on a fresh machine that has only Python 3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SAFEPAUSE_VENV:-$root/.venv}"
want="${1:-}"

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating virtual environment in $venv" >&2
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.safepause-$want-$(cat "$root/setup.py" "$root/requirements-test.txt" 2>/dev/null | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$py" -m pip install --quiet --upgrade pip wheel
  "$py" -m pip install --quiet "OctoPrint==1.11.8"
  "$py" -m pip install --quiet --no-build-isolation -e "$root"
  if [ "$want" = "test" ]; then
    "$py" -m pip install --quiet -r "$root/requirements-test.txt"
  fi
  touch "$stamp"
fi
export SAFEPAUSE_PY="$py"
