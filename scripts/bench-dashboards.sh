#!/usr/bin/env bash
# Dashboards benchmark: buy throughput alone, then with COUNT dashboards watching the same
# room while the same buy load runs in it; prints both loadtest summaries.
# usage: scripts/bench-dashboards.sh [COUNT] [SOURCES]
# env: NO_BUILD=1 skips the build; PORT (default 28772); LIVEHUB_BIN, another server binary to
# measure (an A/B against an older build); SERVER_ARGS, more server flags (e.g.
# "--dashboard-frames-per-s 10000").
# Journal snapshots are off: encoding one is CPU work that falls in the first phase or the
# second depending on how many buys the first made, and would move the ratio between the two
# phases with no change in the dashboards.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}; SOURCES=${2:-4}
PORT=${PORT:-28772}
DATA=$(mktemp -d /tmp/livehub-dash.XXXXXX)
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace -q
ulimit -n "$(ulimit -Hn)"
${LIVEHUB_BIN:-./target/release/livehub} --snapshot-every-records 0 ${SERVER_ARGS:-} --listen 127.0.0.1:$PORT --data-dir "$DATA" --admin-token adm \
  --viewer-token view --open-buyers --buyer-rate 1000000 --buyer-burst 1000000 >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
LT="./target/release/livehub-loadtest --open-buyers --admin-token adm --viewer-token view --no-progress --url http://127.0.0.1:$PORT"
ROOM=dash-$(date +%s)
echo "== buys alone (room $ROOM-alone)"
$LT --room "$ROOM-alone" steady --connections 50 --in-flight 16 --duration 8s | grep -E "acks_per_s|latency|FAIL"
echo "== $COUNT dashboards on room $ROOM"
$LT --room "$ROOM" dashboards --count "$COUNT" --buys-elsewhere --duration 40s --sources "$SOURCES" --max-seconds 150 >"$DATA/dash.out" 2>&1 &
DASH=$!
# Wait until the dashboards are all connected (the server's gauge), then buy in their room.
for _ in $(seq 600); do
  n=$(curl -sf http://127.0.0.1:$PORT/metrics | awk '/^livehub_connections\{kind="dashboard"\}/ {print int($2)}')
  [ "${n:-0}" -ge "$COUNT" ] && break; sleep 0.1
done
echo "dashboards connected: ${n:-0}"
sleep 2
echo "== buys with the dashboards attached (room $ROOM)"
$LT --room "$ROOM" steady --connections 50 --in-flight 16 --duration 8s | grep -E "acks_per_s|latency|FAIL"
wait $DASH || true
grep -E "delay|snapshots|received|FAIL|PASS" "$DATA/dash.out" | head -20
