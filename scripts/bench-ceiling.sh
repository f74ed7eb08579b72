#!/usr/bin/env bash
# Issue 25's yardstick: the closed loop (200 connections × 4 buys in flight, 8 s) on livehub
# (release build, durable, a fresh server and data dir each round), then on the load tool's
# batched echo (the transport's ceiling on livehub's own stack) and on the in-memory Bun
# reference hub (loadtest/peers/bun), all three in one run of the load tool, so each livehub
# figure has its peers beside it. ROUNDS runs (default 3), so the servers take turns:
# livehub, echo, bun, livehub, echo, bun, ...
#
#   scripts/bench-ceiling.sh [LIVEHUB_BINARY]
#
# Needs `npm ci --prefix loadtest/peers/bun` (or LIVEHUB_BUN). Run it under the bench lock.
# Prints one line per server and round (acks/s, p99, server CPU µs per ack); the load tool's
# JSON reports stay in $OUT (default a fresh temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/livehub}
LT=${LT_BIN:-target/release/livehub-loadtest}
PORT=${PORT:-18931}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-200}
IN_FLIGHT=${IN_FLIGHT:-4}
OUT=${OUT:-$(mktemp -d /tmp/bench-ceiling.XXXXXX)}
ulimit -n 20000
SERVER=
D=
stop() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; [ -n "$D" ] && rm -rf "$D"; SERVER=; D=; }
trap stop EXIT
echo "commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg), reports in $OUT"
for r in $(seq "$ROUNDS"); do
  D=$(mktemp -d /tmp/bench-ceiling-data.XXXXXX)
  "$BIN" --listen 127.0.0.1:$PORT --data-dir "$D" --admin-token adm --viewer-token view --open-buyers \
    --buyer-rate 1000000 --buyer-burst 1000000 >/dev/null 2>&1 & SERVER=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
  # What else ran on the two cores meanwhile: top's processes each second, outside this run's.
  top -b -d 1 -w 200 >"$OUT/top$r.txt" 2>/dev/null & TOP=$!
  "$LT" --url "http://127.0.0.1:$PORT" --open-buyers --admin-token adm --viewer-token view --no-progress \
    --room "ceiling$r" --json steady --connections "$CONNS" --in-flight "$IN_FLIGHT" --duration "$DURATION" \
    --server-pid "$SERVER" --against-echo --against-bun >"$OUT/round$r.json" || echo "round $r: load tool exit $?"
  kill $TOP 2>/dev/null; wait $TOP 2>/dev/null || true
  stop
  # The round's journal leaves the page cache before the next server starts.
  sync
  python3 - "$OUT/round$r.json" "$r" "$OUT/top$r.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for name in ("livehub", "echo", "bun"):
    b = s.get(name, {}).get("buys", {})
    lat = b.get("latency", {})
    print(f"round {sys.argv[2]} {name:8} acks/s {b.get('acks_per_s', 0):>10,.0f}  p99 {lat.get('p99_ms', '-'):>6} ms"
          f"  cpu/ack {b.get('server_cpu_us_per_ack', '-')} µs  timed out {b.get('timed_out', '-')}")
# Others' CPU: every process but this run's (livehub, the load tool with its in-process echo,
# bun) and top itself, in % of one core, averaged over top's samples.
ours = ("livehub", "livehub-loadtes", "bun", "top")
samples, other = 0, 0.0
for line in open(sys.argv[3], errors="replace"):
    f = line.split()
    if line.startswith("top -"):
        samples += 1
    elif len(f) >= 12 and f[0].isdigit() and f[11] not in ours:
        try:
            other += float(f[8])
        except ValueError:
            pass
print(f"round {sys.argv[2]} others' CPU {other / max(samples, 1):.0f}% of a core on average")
print(f"round {sys.argv[2]} checks {'PASS' if s.get('ok') else 'FAIL ' + '; '.join(s.get('problems', []))}")
PY
done
