#!/usr/bin/env bash
# Issue 21's benchmarks, each on a fresh server and data dir (release build):
#   scripts/bench-payments.sh wave     [LIVEHUB_BINARY]  100,000 unpaid orders expiring together
#                                                          while 20,000 buys/s go on
#   scripts/bench-payments.sh notices  [LIVEHUB_BINARY]  durable payment notices a second
#                                                          (100,000 from 64 connections), with
#                                                          the load tool's HTTP echo as ceiling
#   scripts/bench-payments.sh checkout [LIVEHUB_BINARY]  the checkout scenario and its checks
# Prints the load tool's JSON report to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?wave, notices or checkout}
BIN=${2:-target/release/livehub}
LT=${LT_BIN:-target/release/livehub-loadtest}
PORT=${PORT:-18921}
ulimit -n 20000
D=$(mktemp -d)
"$BIN" --listen 127.0.0.1:$PORT --data-dir "$D" --admin-token adm --viewer-token view --open-buyers \
  --payment-secret bench-secret --buyer-rate 1000000 --buyer-burst 1000000 >/dev/null 2>&1 & SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
LTC=("$LT" --url "http://127.0.0.1:$PORT" --open-buyers --admin-token adm --viewer-token view
  --payment-secret bench-secret --no-progress --room "bench$$" --json)
case "$WHAT" in
  wave) "${LTC[@]}" expiry-wave --orders 100000 --rate 20000 ;;
  notices) "${LTC[@]}" payments --orders 100000 --connections 64 --against-echo ;;
  checkout) "${LTC[@]}" checkout ;;
  *) echo "unknown: $WHAT" >&2; exit 2 ;;
esac
