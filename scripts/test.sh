#!/usr/bin/env bash
# Runs every test of livehub on a fresh machine: installs what is missing (Debian's chromium
# and CJK fonts for the browser tests, redis-server and haproxy for the fleet-mode tests, npm
# packages, clippy, cargo-fuzz), then checks the format and clippy's lints (warnings are errors), runs
# the Rust tests, a short run of each fuzz target, the browser tests against a real livehub
# (the dashboard, and the load tool's HTML report), and a short loadtest run that checks
# invariants (never timings).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step() { printf '\n== %s ==\n' "$*"; }

step "system packages"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/bin/redis-cli ] || need+=(redis-tools)   # redis-cli joins the test clusters
[ -x /usr/sbin/haproxy ] || need+=(haproxy)        # tests/fleet_haproxy.rs runs deploy/haproxy.cfg
fc-list 2>/dev/null | grep -qi "noto sans cjk" || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "format"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "npm packages"
# The Bun reference hub's binary (the `bun` npm package) for loadtest/tests/peers.rs, which
# fails without it; the browser tests' packages.
npm ci --prefix loadtest/peers/bun --no-audit --no-fund --loglevel=error
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

step "rust tests"
cargo test --workspace --locked

step "fuzz (stable toolchain, ${LIVEHUB_FUZZ_SECONDS:-15} s a target)"
# cargo-fuzz with --sanitizer none needs no nightly. Its build output lives outside the clone
# so a machine that ran this before rebuilds only what changed.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fuzz_started=$SECONDS
fuzz_target_dir="${LIVEHUB_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/livehub/fuzz-target}"
fuzz_opts=(--sanitizer none --codegen-units 16 --target-dir "$fuzz_target_dir")
(cd fuzz && cargo fuzz build "${fuzz_opts[@]}")
for target in $(cd fuzz && cargo fuzz list); do
  scratch=$(mktemp -d)
  mkdir "$scratch/corpus"
  log="$scratch/log"
  # New inputs go to the scratch corpus; the committed seeds in fuzz/corpus stay as they are.
  if ! (cd fuzz && cargo fuzz run "${fuzz_opts[@]}" "$target" "$scratch/corpus" "corpus/$target" -- \
      -max_total_time="${LIVEHUB_FUZZ_SECONDS:-15}" -max_len=4096 -print_final_stats=1 >"$log" 2>&1); then
    tail -n 60 "$log"
    echo "fuzz target $target failed; a failing input is saved in fuzz/artifacts/$target/ (see fuzz/README.md)"
    exit 1
  fi
  echo "$target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log"), no failure"
  rm -rf "$scratch"
done
echo "fuzz step: $((SECONDS - fuzz_started)) s"

step "browser tests (headless chromium against a real livehub: the dashboard, the review page, the load tool's report)"
"$ROOT/scripts/with-livehub.sh" node --test tests/browser/

if [ -x target/debug/livehub-loadtest ] && target/debug/livehub-loadtest --help 2>/dev/null | grep -q spike; then
  step "loadtest smoke run (invariants only)"
  "$ROOT/scripts/with-livehub.sh" bash -c '
    set -e
    lt=target/debug/livehub-loadtest
    common="--url $LIVEHUB_URL --open-buyers --admin-token $LIVEHUB_ADMIN_TOKEN --viewer-token $LIVEHUB_VIEWER_TOKEN --max-seconds 60"
    $lt spike $common --buyers 500 --stock 100 --limit 1 --against-echo --against-bun
    $lt spike $common --buyers 300 --stock 50 --limit 1 --trigger clock --lead 500ms
    $lt steady $common --connections 20 --duration 3 --in-flight 4
    $lt checkout $common --buyers 200 --stock 40 --delay-max 3s
    $lt payments $common --orders 2000 --connections 16
    $lt audience $common --events-per-s 20000 --duration 3s --viewers 2000 --buy-rate 500 \
      --buy-connections 10 --dashboards 2 --alternate 500ms
    $lt dashboards $common --count 3 --duration 3s --with-buys 300'
fi

step "all tests passed"
