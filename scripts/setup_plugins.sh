#!/usr/bin/env bash
# The framework plugins' venvs, one per framework (`make setup-plugins`; `make setup` runs it):
#   .venv-pipecat: requirements-plugins-pipecat.txt + this checkout's client package with its [pipecat] extra
#   .venv-livekit: requirements-plugins-livekit.txt + the client package with its [livekit] extra
# Each requirements file pins the whole resolution; installing `.[extra]` with it checks that the package's declared
# dependencies (ranges, pyproject.toml) and extra agree with those pins. The client package is a regular (not
# editable) install: its stubs are built by pyproject's grpcio-tools (protobuf 6/7), not the checkout's.
#   bash scripts/setup_plugins.sh [pipecat] [livekit]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ $# -gt 0 ] || set -- pipecat livekit
for fw in "$@"; do
  case "$fw" in pipecat|livekit) ;; *) echo "unknown framework: $fw" >&2; exit 2 ;; esac
  venv=.venv-$fw
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  # (a local directory is always rebuilt and reinstalled: the checkout's sources as they are now)
  "$venv/bin/pip" install --disable-pip-version-check -q -r "requirements-plugins-$fw.txt" ".[$fw]"
  "$venv/bin/pip" check --disable-pip-version-check
  touch "$venv/.client"
  echo "$venv: $("$venv/bin/python" -c "import importlib.metadata as m; print('$fw', m.version({'pipecat': 'pipecat-ai', 'livekit': 'livekit-agents'}['$fw']), 'protobuf', m.version('protobuf'))")"
done
