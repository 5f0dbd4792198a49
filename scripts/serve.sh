#!/usr/bin/env bash
# Start the demo: an offline OctoPrint 1.11.8 with this plugin, the virtual printer connected, the
# gcode files uploaded and a printer profile per build volume. Run from anywhere: bash scripts/serve.sh
#   PORT=5001 bash scripts/serve.sh    another port (default 5000, 127.0.0.1 only)
#   KEEP=1 bash scripts/serve.sh       keep the temporary base directory after Ctrl-C
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh   # creates .venv (OctoPrint + plugin, editable) once; exports SAFEPAUSE_PY
args=(--port "${PORT:-5000}")
if [ "${KEEP:-0}" = "1" ]; then
  args+=(--keep)
fi
exec "$SAFEPAUSE_PY" scripts/sandbox.py "${args[@]}"
