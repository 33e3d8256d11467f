#!/usr/bin/env bash
# `make stop`: SIGTERM each service (they drain, then exit), then the two redis instances if we started them.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=.run
for svc in web gateway decoder speaker frontend redis redis-store; do
  f="$RUN/$svc.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "$svc: stopped (pid $pid)"
  fi
  rm -f "$f"
done
