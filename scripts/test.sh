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
# Test files run in parallel (pytest-xdist), a file's tests together on one worker: most of the time is
# spent waiting on real servers, browsers and the virtual printer, so more workers than cores pay.
workers="${SAFEPAUSE_TEST_WORKERS:-4}"
exec "$SAFEPAUSE_PY" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile "$@"
