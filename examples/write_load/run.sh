#!/usr/bin/env bash
# Write-path load for one index configuration (BENCHMARKS.md, 2026-11-27, index cost).
# Usage: run.sh HERALD_BINARY LABEL INDEX [PORT]
#   INDEX: "none", "default", "all", or "-" to pass no [search] index key (binaries before it).
# Starts `herald serve` on a fresh temp data dir, waits for /healthz, runs
# `wrk -t1 -c32 -d8s --latency` POSTing Tasks (post_task.lua), prints wrk's summary and the
# data dir size, then stops the server it started (by its pid) and removes the data dir.
set -euo pipefail
bin=$1; label=$2; index=$3; port=${4:-8090}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/herald-load.XXXXXX)
args=(serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --allow-private-endpoints)
if [ "$index" != "-" ]; then
  printf '[search]\nindex = "%s"\n' "$index" > "$dir/herald.toml"
  args+=(--config "$dir/herald.toml")
fi
HERALD_LOG__LEVEL=warn "$bin" "${args[@]}" > "$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
  sleep 0.1
done
echo "== $label (index=$index)"
wrk -t1 -c32 -d8s --latency -s "$here/post_task.lua" "http://127.0.0.1:$port/fhir/Task" | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx|requests in|Socket errors'
if [ "${HEALTHZ:-0}" = 1 ]; then
  echo "-- GET /healthz, same server"
  wrk -t1 -c32 -d8s --latency "http://127.0.0.1:$port/healthz" | grep -E 'Requests/sec|50%|99%'
fi
kill "$pid"; wait "$pid" || true
du -sh "$dir/data" | cut -f1 | sed 's/^/data dir: /'
rm -rf "$dir"
