#!/usr/bin/env bash
# The audit under load: a room of about a million orders, then buys at 50,000/s on a fresh
# room for 10 s, without and then with 64 connections calling that big room's /audit as fast as
# they are answered (wrk, from Debian's package), twice over. Starts its own server.
#   scripts/bench-audit.sh [LIVEHUB_BINARY]        (default: target/release/livehub)
# Prints each run's buy acks/s and p99, and wrk's audits a second and latency.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/livehub}
LT_BIN=${LT_BIN:-target/release/livehub-loadtest}
PORT=${PORT:-18801}
ulimit -n 20000
D=$(mktemp -d)
OUT=$(mktemp -d)
"$BIN" --listen 127.0.0.1:$PORT --data-dir "$D" --admin-token adm --viewer-token view --open-buyers \
  --buyer-rate 1000000 --buyer-burst 1000000 >/dev/null 2>&1 & SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$D" "$OUT"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
LT="$LT_BIN --open-buyers --admin-token adm --viewer-token view --url http://127.0.0.1:$PORT --no-progress"
$LT steady --room big --connections 50 --in-flight 16 --duration 8s --json >/dev/null
curl -s -H "Authorization: Bearer view" http://127.0.0.1:$PORT/api/rooms/big/stats |
  python3 -c 'import json,sys; print("orders in the audited room:", json.load(sys.stdin)["orders"])'
summary() {
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["livehub"]["buys"]; print(sys.argv[2], "acks/s", round(d["acks_per_s"]), "p99", d["latency"]["p99_ms"], "ms, by arrival", d["latency_arrival"]["p99_ms"], "ms")' "$1" "$2"
}
for i in 1 2; do
  $LT steady --room quiet$i --connections 50 --rate 50000 --duration 10s --json >"$OUT/q.json"
  summary "$OUT/q.json" "without audits:"
  wrk -t1 -c64 -d13s -H "Authorization: Bearer view" http://127.0.0.1:$PORT/api/rooms/big/audit >"$OUT/wrk.txt" &
  W=$!
  sleep 1 # the audits start first: a fold of the whole room is part of what is measured
  $LT steady --room audited$i --connections 50 --rate 50000 --duration 10s --json >"$OUT/a.json"
  wait $W
  summary "$OUT/a.json" "with 64 audit callers:"
  grep -E "Requests/sec|Latency" "$OUT/wrk.txt"
done
