#!/usr/bin/env bash
# Runs every test of livehub on a fresh machine: installs what is missing (Debian's chromium
# and CJK fonts for the browser test, redis-server for the several-hubs tests, npm packages), then the Rust tests, the browser test
# against a real livehub, and a short loadtest run that checks invariants (never timings).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step() { printf '\n== %s ==\n' "$*"; }

step "system packages"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
fc-list 2>/dev/null | grep -qi "noto sans cjk" || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "format"
cargo fmt --all -- --check

step "build"
cargo build --workspace --all-targets --locked

step "rust tests"
cargo test --workspace --locked

step "browser test (headless chromium against a real livehub)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
"$ROOT/scripts/with-livehub.sh" node --test tests/browser/

if [ -x target/debug/livehub-loadtest ] && target/debug/livehub-loadtest --help 2>/dev/null | grep -q spike; then
  step "loadtest smoke run (invariants only)"
  "$ROOT/scripts/with-livehub.sh" bash -c '
    set -e
    lt=target/debug/livehub-loadtest
    common="--url $LIVEHUB_URL --open-buyers --admin-token $LIVEHUB_ADMIN_TOKEN --viewer-token $LIVEHUB_VIEWER_TOKEN --max-seconds 60"
    $lt spike $common --buyers 500 --stock 100
    $lt steady $common --connections 20 --duration 3 --in-flight 4'
fi

step "all tests passed"
