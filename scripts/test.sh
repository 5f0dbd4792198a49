#!/usr/bin/env bash
# The whole test suite: lint, unit, integration (real MachineCom + virtual printer), end-to-end (real
# `octoprint serve`, REST, headless Debian chromium). Extra arguments go to pytest (e.g. -k, -x).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Browser tests drive Debian's chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo_cmd" ]; then
    echo "Installing Debian's chromium for the browser tests" >&2
    $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and cannot be installed (no root): browser tests will fail" >&2
  fi
fi

source "$root/scripts/bootstrap.sh" test
"$SAFEPAUSE_PY" -m ruff check octoprint_safepause tests benchmarks scripts
exec "$SAFEPAUSE_PY" -m pytest -q -p no:cacheprovider "$@"
