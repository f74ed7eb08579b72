#!/usr/bin/env bash
# Starts a livehub (debug build) on a free loopback port with a fresh data dir and known
# tokens and payment secret, waits until it serves, runs the given command with LIVEHUB_URL,
# the tokens and the secret in its environment, then stops livehub with SIGTERM and removes the
# data dir. Exits with the command's status. The binary is taken from $CARGO_TARGET_DIR when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d /tmp/livehub-run.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LIVEHUB_URL="http://127.0.0.1:$port"
export LIVEHUB_ADMIN_TOKEN="admin-$RANDOM$RANDOM"
export LIVEHUB_VIEWER_TOKEN="viewer-$RANDOM$RANDOM"
# Fixed, so a test can sign payment notices (POST /api/payments) as a provider's adapter does.
export LIVEHUB_PAYMENT_SECRET="payment-secret-for-tests"
cargo build --quiet --bin livehub
"${CARGO_TARGET_DIR:-target}/debug/livehub" --listen "127.0.0.1:$port" --data-dir "$data" --open-buyers \
  --buyer-rate 1000000 --buyer-burst 1000000 --payment-secret "$LIVEHUB_PAYMENT_SECRET" \
  --admin-token "$LIVEHUB_ADMIN_TOKEN" --viewer-token "$LIVEHUB_VIEWER_TOKEN" >"$data/livehub.log" 2>&1 &
pid=$!
# Stops livehub and removes its data dir (after the log is shown on a failure).
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap stop EXIT
for _ in $(seq 1 100); do
  curl -fsS "$LIVEHUB_URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/livehub.log"; exit 1; }
  sleep 0.1
done
set +e
"$@"
status=$?
set -e
[ $status -eq 0 ] || tail -n 50 "$data/livehub.log"
exit $status
