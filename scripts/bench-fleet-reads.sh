#!/usr/bin/env bash
# Fleet reads benchmark: two hubs on one local redis-server, buys on hub A, and how soon hub B
# reads each of A's orders from the room's stream (where its dashboards fold them).
# What is measured: hub B's histogram livehub_fleet_stream_delay_seconds, from an order's
# placement on hub A (its ts_ms, taken before A's Redis script, journal fsync and ack) to hub B
# taking it in from the stream. It is an upper bound of ack → folded on B. A dashboard on B
# shows the order at B's next push after that: add at most --push-interval-ms (10 here).
# Percentiles are read from the histogram's buckets: "≤ X ms" is the bucket bound.
# usage: scripts/bench-fleet-reads.sh [RATE] [DURATION]
# env: NO_BUILD=1 skips the build; PORT (default 28790, uses PORT..PORT+2); LIVEHUB_BIN,
# another server binary to measure (an A/B against an older build); LOADTEST_BIN, the load tool.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}; DURATION=${2:-10s}
PORT=${PORT:-28790}
RPORT=$PORT; APORT=$((PORT + 1)); BPORT=$((PORT + 2))
DATA=$(mktemp -d /tmp/livehub-fleet-reads.XXXXXX)
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace -q
BIN=${LIVEHUB_BIN:-./target/release/livehub}
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >"$DATA/redis.log" 2>&1 &
REDIS=$!
PIDS="$REDIS"
trap 'kill $PIDS 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
common="--admin-token adm --viewer-token view --open-buyers --buyer-rate 1000000 --buyer-burst 1000000 --push-interval-ms 10 --redis redis://127.0.0.1:$RPORT/0"
$BIN --listen 127.0.0.1:$APORT --data-dir "$DATA/a" --hub-id a $common >"$DATA/a.log" 2>&1 &
PIDS="$PIDS $!"
$BIN --listen 127.0.0.1:$BPORT --data-dir "$DATA/b" --hub-id b $common >"$DATA/b.log" 2>&1 &
PIDS="$PIDS $!"
for p in $APORT $BPORT; do
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$p/healthz >/dev/null && break; sleep 0.1; done
done
LT="${LOADTEST_BIN:-./target/release/livehub-loadtest} --open-buyers --admin-token adm --viewer-token view --no-progress"
ROOM=reads-$(date +%s)
echo "== $RATE buys/s for $DURATION on hub A (room $ROOM)"
$LT --url http://127.0.0.1:$APORT --room "$ROOM" steady --connections 20 --rate "$RATE" --duration "$DURATION" \
  | grep -E "acks_per_s|latency|FAIL" || true
sleep 1
echo "== hub B: placement on A → read from the stream on B"
curl -sf http://127.0.0.1:$BPORT/metrics | awk '
  /^livehub_fleet_stream_delay_seconds_bucket/ {
    match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n[++k] = $2; b[k] = le }
  /^livehub_fleet_stream_delay_seconds_count/ { total = $2 }
  /^livehub_fleet_stream_delay_seconds_sum/ { sum = $2 }
  END {
    if (total == 0) { print "no orders of hub A read on hub B"; exit 1 }
    split("0.5 0.9 0.99 0.999", qs, " ")
    for (q = 1; q <= 4; q++) {
      for (i = 1; i <= k; i++) if (n[i] >= qs[q] * total) { printf "p%s ≤ %s ms\n", qs[q] * 100, (b[i] == "+Inf" ? "inf" : b[i] * 1000); break }
    }
    printf "orders %d, mean %.2f ms\n", total, sum / total * 1000
  }'
