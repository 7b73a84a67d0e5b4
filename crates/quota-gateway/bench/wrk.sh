#!/usr/bin/env bash
# Gateway overhead: wrk against the upstream directly, then through quota-gateway (a keyed
# private route; a plan with a quota, no throttle), alternating, ROUNDS rounds of DUR
# seconds each with CONNS connections. Starts a one-node `quotad --dev` on 127.0.0.1:7370,
# the `upstream` example on :9100 and the gateway on :9200; stops them on exit.
# Needs: wrk; `cargo build --release --bin quotad --bin quotactl -p quota-server -p quota-cli`
# and `cargo build --release -p quota-gateway --bin quota-gateway --example upstream`.
# Usage: crates/quota-gateway/bench/wrk.sh   (env: ROUNDS=5 DUR=5 CONNS=32
#        UPSTREAM_THREADS=1 UPSTREAM_DELAY_MS=0 UPSTREAM_WORK_US=0, GATEWAY_BIN to compare
#        another build of the gateway)
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=${BENCH_DIR:-/tmp/quota-gateway-bench}; T=target/release
rm -rf $B/data; mkdir -p $B/data
export QUOTA_ENDPOINTS=http://127.0.0.1:7370
$T/quotad --dev --aws-api-listen off --listen 127.0.0.1:7370 --data-dir $B/data >$B/quotad.log 2>&1 & QPID=$!
UPSTREAM_THREADS=${UPSTREAM_THREADS:-1} $T/examples/upstream 127.0.0.1:9100 >$B/upstream.log 2>&1 & UPID=$!
trap 'kill $QPID $UPID ${GPID:-} 2>/dev/null || true' EXIT
for _ in $(seq 50); do $T/quotactl cluster status >/dev/null 2>&1 && break; sleep 0.2; done
$T/quotactl plan create bench --limit 1000000000 --period month --stage bench/prod >/dev/null
SECRET=$($T/quotactl --json key create bench-key | grep -o '"secret": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')
$T/quotactl plan attach bench bench-key >/dev/null
cat >$B/gw.toml <<TOML
upstream = "http://127.0.0.1:9100"
endpoints = ["http://127.0.0.1:7370"]
api = "bench"
stage = "prod"
[[routes]]
method = "GET"
path = "/items/{id}"
TOML
RUST_LOG=warn ${GATEWAY_BIN:-$T/quota-gateway} --config $B/gw.toml --listen 127.0.0.1:9200 >$B/gw.log 2>&1 & GPID=$!
sleep 1
curl -si -H "x-api-key: $SECRET" http://127.0.0.1:9200/items/1 | head -12
W="wrk -t1 -c${CONNS:-32} -d${DUR:-5}s --latency"
for i in $(seq ${ROUNDS:-5}); do
  echo "== round $i direct";  $W http://127.0.0.1:9100/items/1 | grep -E "Requests/sec|50%|99%"
  echo "== round $i gateway"; $W -H "x-api-key: $SECRET" http://127.0.0.1:9200/items/1 | grep -E "Requests/sec|50%|99%|Non-2xx"
done
