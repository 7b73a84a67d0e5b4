#!/usr/bin/env bash
# Stop the nodes started by cluster/up.sh (SIGTERM, then wait). Data stays in cluster/data;
# `cluster/down.sh --wipe` also deletes it.
set -euo pipefail
cd "$(dirname "$0")/.."
for i in 1 2 3; do
    pidfile=cluster/run/node$i.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "node $i stopped"
    fi
    rm -f "$pidfile"
done
if [ "${1:-}" = "--wipe" ]; then rm -rf cluster/data; echo "data wiped"; fi
