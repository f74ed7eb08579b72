#!/usr/bin/env bash
# Memory per idle buyer socket (issue 25): a fresh server and data dir, COUNT buyers that
# connect, read their hello and then only answer pings, and the server's resident memory
# (VmRSS, which /metrics reads from /proc/self/status) before and after. Prints the growth
# divided by the sockets open: at the top (2 s after the last hello, before any client ping)
# and at the end of the hold (after the clients' pings and the server's heartbeats have made
# every socket read and write at least once).
# usage: scripts/bench-idle-sockets.sh [COUNT] [HOLD]
# env: NO_BUILD=1 skips the build; PORT (default 18931); LIVEHUB_BIN / LT_BIN, other binaries
# (an A/B against an older build); SERVER_ARGS, more server flags; JSON=1 prints the load
# tool's whole report too.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-15000}; HOLD=${2:-25s}
PORT=${PORT:-18931}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${LIVEHUB_BIN:-$TARGET/release/livehub}
LT=${LT_BIN:-$TARGET/release/livehub-loadtest}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p livehub -p livehub-loadtest --bins
# One process holds COUNT sockets on each side (plus a few files).
ulimit -n 20000
DATA=$(mktemp -d /tmp/livehub-idle.XXXXXX)
# The heartbeat every third of the idle timeout: a short one so that every socket has been
# pinged (and has answered) within the hold.
"$BIN" --listen 127.0.0.1:$PORT --data-dir "$DATA" --admin-token adm --viewer-token view \
  --open-buyers --buyer-rate 1000000 --buyer-burst 1000000 --idle-timeout-s 30 ${SERVER_ARGS:-} \
  >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
"$LT" --open-buyers --admin-token adm --viewer-token view --no-progress --json \
  --url "http://127.0.0.1:$PORT" --room "idle$$" \
  ramp --connections "$COUNT" --per-second 3000 --hold "$HOLD" --ping-every 5s --sources 4 \
  --max-seconds 180 >"$DATA/report.json" || echo "loadtest exit $?" >&2
[ -z "${JSON:-}" ] || cat "$DATA/report.json"
jq -r '.server_memory as $m |
  "sockets \(.connections.connected) of \(.connections.wanted); " +
  "rss MiB \($m.rss_mb_before) -> \($m.rss_mb_at_top) (top) -> \($m.rss_mb_end_of_hold) (end of hold); " +
  "bytes per socket: \($m.bytes_per_connection_at_top) at the top, \($m.bytes_per_connection_end_of_hold) at the end of the hold; " +
  "checks: \([.checks[] | select(.ok | not) | .name] | if length == 0 then "all passed" else "FAILED \(join(", "))" end)"' \
  "$DATA/report.json"
