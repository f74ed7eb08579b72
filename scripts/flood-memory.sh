#!/usr/bin/env bash
# Overload benchmark: open-loop buys at RATE (set it to at least twice what the server acks)
# for SECONDS, sampling the server's resident memory from /metrics every second.
# Prints "elapsed_s rss_mib" lines, then the loadtest's summary (invariants checked).
# With STOCK set, the SKU sells out during the flood (a flash sale): from then on every buy
# is answered sold_out and memory must stay flat.
# usage: scripts/flood-memory.sh [RATE] [SECONDS] [CONNECTIONS] [STOCK]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-120000}; SECS=${2:-60}; CONNS=${3:-100}; STOCK=${4:-1000000000}
PORT=18871
DATA=$(mktemp -d /tmp/livehub-flood.XXXXXX)
cargo build --release --workspace -q
./target/release/livehub --listen 127.0.0.1:$PORT --data-dir "$DATA" --admin-token adm \
  --viewer-token view --open-buyers --buyer-rate 1000000 --buyer-burst 1000000 >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
(
  t0=$(date +%s.%N)
  while kill -0 $SERVER 2>/dev/null; do
    rss=$(curl -sf http://127.0.0.1:$PORT/metrics | awk '/^livehub_process_resident_memory_bytes/ {print $2}')
    [ -n "$rss" ] && awk -v t0="$t0" -v now="$(date +%s.%N)" -v r="$rss" 'BEGIN {printf "%6.1f s %8.1f MiB\n", now - t0, r / 1048576}'
    sleep 1
  done
) &
SAMPLER=$!
./target/release/livehub-loadtest --open-buyers --admin-token adm --viewer-token view --no-progress \
  --url http://127.0.0.1:$PORT steady --connections "$CONNS" --rate "$RATE" --duration "${SECS}s" --stock "$STOCK" \
  --max-seconds $((SECS + 120)) || echo "loadtest exit $?"
sleep 3
kill $SAMPLER 2>/dev/null || true
