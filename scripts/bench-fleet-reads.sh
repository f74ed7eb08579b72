#!/usr/bin/env bash
# Fleet reads benchmark: two hubs on one local redis-server, buys on hub A, and how soon the
# dashboards show each acked order: 10 dashboards on hub A itself, then (a new room) 10 on hub
# B, from each ack's arrival at the load tool to the first snapshot that covers the order
# (the load tool's `dashboards --dashboard-url`, by its own clock). Dashboards push at most
# every PUSH_MS (the server's --push-interval-ms, default 100 as the server's default).
# Then hub B's histogram livehub_fleet_stream_delay_seconds over both rooms: from an order's
# placement on A (its ts_ms, before A's Redis script, journal fsync and ack) to B taking it in
# from the stream; its percentiles are read from the buckets ("≤ X ms" is the bucket bound).
# usage: scripts/bench-fleet-reads.sh [RATE] [DURATION]
# env: NO_BUILD=1 skips the build; PUSH_MS (default 100); PORT (default 28790, uses
# PORT..PORT+2); LIVEHUB_BIN, another server binary to measure (an A/B against an older build); LOADTEST_BIN, the load tool.
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
PUSH_MS=${PUSH_MS:-100}
common="--admin-token adm --viewer-token view --open-buyers --buyer-rate 1000000 --buyer-burst 1000000 --push-interval-ms $PUSH_MS --redis redis://127.0.0.1:$RPORT/0"
$BIN --listen 127.0.0.1:$APORT --data-dir "$DATA/a" --hub-id a $common >"$DATA/a.log" 2>&1 &
PIDS="$PIDS $!"
$BIN --listen 127.0.0.1:$BPORT --data-dir "$DATA/b" --hub-id b $common >"$DATA/b.log" 2>&1 &
PIDS="$PIDS $!"
for p in $APORT $BPORT; do
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$p/healthz >/dev/null && break; sleep 0.1; done
done
LT="${LOADTEST_BIN:-./target/release/livehub-loadtest} --open-buyers --admin-token adm --viewer-token view --no-progress --json"
# ack → shown: the load tool buys on hub A and watches 10 dashboards on HUB, and gives for each
# acked order and dashboard the time from the ack's arrival to the first snapshot covering it.
shown() {
  local hub=$1 room=reads-$1-$(date +%s%N)
  $LT --url http://127.0.0.1:$APORT --room "$room" dashboards --count 10 --duration "$DURATION" \
    --with-buys "$RATE" --buy-connections 20 --dashboard-url "http://127.0.0.1:$hub" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin)
a, b = r["ack_to_dashboard"], r["buys"]["latency"]
l = a["latency"]
print("  checks", "ok" if r["ok"] else "FAILED", "; ack → shown p50", l["p50_ms"], "ms, p99", l["p99_ms"],
      "ms, max", l["max_ms"], "ms over", a["pairs"], "pairs, never shown", a["never_shown"],
      "; the buys ack p99", b["p99_ms"], "ms")'
}
echo "== $RATE buys/s for $DURATION on hub A, dashboards on hub A itself (push interval ${PUSH_MS} ms)"
shown $APORT
echo "== the same, dashboards on hub B"
shown $BPORT
sleep 1
echo "== hub B: placement on A → read from the stream on B (all of B's reads above)"
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
