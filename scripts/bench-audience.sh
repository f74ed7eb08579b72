#!/usr/bin/env bash
# Issue 22's benchmarks, each on a fresh server and data dir (release build):
#   scripts/bench-audience.sh ingest [LIVEHUB_BINARY]  durable audience events a second: batches
#                                                       of 10,000 from 8 connections, asked at
#                                                       EVENTS_PER_S (default 2,000,000) for at
#                                                       most 10 s and 10,000,000 events; asked
#                                                       over what the server takes, the figure
#                                                       is its ceiling
#   scripts/bench-audience.sh buys   [LIVEHUB_BINARY]  buys at 20,000/s with 10 dashboards for
#                                                       twice DURATION (default 10 s, so 20 s);
#                                                       in every other 1 s window
#                                                       (ALTERNATE), 100,000 viewers enter and
#                                                       interact (EVENTS_PER_S a second in
#                                                       those windows, default 50,000, in
#                                                       batches of BATCH, default 10,000)
# Prints the load tool's JSON summary to stdout, and the server's CPU time to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?ingest or buys}
BIN=${2:-target/release/livehub}
LT=${LT_BIN:-target/release/livehub-loadtest}
PORT=${PORT:-18922}
ulimit -n 20000
D=$(mktemp -d)
"$BIN" --listen 127.0.0.1:$PORT --data-dir "$D" --admin-token adm --viewer-token view --open-buyers \
  --ingest-token ing --buyer-rate 1000000 --buyer-burst 1000000 >/dev/null 2>&1 & SERVER=$!
# The server's user + system time for the whole run (clock ticks of 1/100 s), on stderr.
cpu() { awk '{print "server CPU: " ($14 + $15) / 100 " s"}' /proc/$SERVER/stat >&2 || true; }
trap 'cpu; kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
LTC=("$LT" --url "http://127.0.0.1:$PORT" --open-buyers --admin-token adm --viewer-token view
  --no-progress --room "bench$$" --json)
case "$WHAT" in
  ingest) "${LTC[@]}" audience --ingest-token ing --events-per-s "${EVENTS_PER_S:-2000000}" \
    --batch 10000 --connections 8 --duration 10s --max-events 10000000 --viewers 100000 ;;
  buys) "${LTC[@]}" audience --ingest-token ing --events-per-s "${EVENTS_PER_S:-50000}" \
    --batch "${BATCH:-10000}" --connections 8 --duration "${DURATION:-10s}" --viewers 100000 \
    --buy-rate 20000 --buy-connections 50 --dashboards 10 --alternate "${ALTERNATE:-1s}" ;;
  *) echo "unknown: $WHAT" >&2; exit 2 ;;
esac
