#!/usr/bin/env bash
# Runs every test tether has, installing what they need. This is the README's
# test command and what CI runs (.ci/run). Debug builds only: release builds
# are for benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "format (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "tests (unit, integration, doc; includes 1000 fixed fault schedules)"
cargo test --workspace -- --skip lab_suite

# The browser client: its TypeScript must build to exactly the committed
# dist/tether.js (the gateway embeds that file), its unit tests run in node
# (test/rooms-fixtures.test.mjs reads fixtures/room-protocol.json, as the
# gateway's Rust test does), and the browser tests drive Debian's chromium
# through playwright-core.
install_debs() {
  step "installing $* (Debian packages)"
  local sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$@"
}
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
if ((${#need[@]})); then install_debs "${need[@]}"; fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  echo "node $(node -v) is too old: playwright-core needs Node.js 20 or newer (Debian 12's nodejs is 18; install 20+, e.g. from NodeSource)" >&2
  exit 1
fi
step "browser client: npm ci, build, dist up to date, unit tests"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
if ! git diff --quiet -- clients/js/dist; then
  git --no-pager diff --stat -- clients/js/dist
  echo "clients/js/dist is not what clients/js/src builds to: run (cd clients/js && npm run build) and commit dist/" >&2
  exit 1
fi
(cd clients/js && node --test test/*.test.mjs)
step "browser tests: real Chromium against tether serve (about 70 s)"
cargo build -q -p tether
node --test clients/js/browser-tests/*.test.mjs

# The fault lab needs root, iproute2, nftables and procps (network
# namespaces, real packet drops, per-namespace sysctls). TETHER_LAB=skip
# skips it explicitly (for machines without root). It runs alone: other tests' CPU load would skew its timings.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v sysctl >/dev/null 2>&1 && [ -x /bin/kill ] || need+=(procps)  # sysctl, kill
if ((${#need[@]})); then install_debs "${need[@]}"; fi
step "fault lab: 14 scenarios in network namespaces, in parallel (about 100 s)"
# The lab is the tether-lab crate; its test lives with the binary, which it
# runs as `tether lab suite` (the lab's nodes are `tether lab-node`).
cargo test -p tether --test lab -- --nocapture

# A further batch of fault schedules whose seeds move daily, so coverage grows
# run after run. A failure prints its seed and the command replaying it.
first=${TETHER_SIM_FIRST:-$(( ($(date +%s) / 86400) * 10000 ))}
step "4000 more fault schedules from seed $first"
TETHER_SIM_FIRST=$first TETHER_SIM_SCHEDULES=4000 \
  cargo test -q -p tether-sim --test fault_schedules -- --nocapture

step "fuzz target compiles (needs nightly)"
if cargo +nightly --version >/dev/null 2>&1; then
  cargo +nightly check --quiet --manifest-path fuzz/Cargo.toml
else
  echo "nightly toolchain not installed: skipping the cargo-fuzz target check"
fi

step "all tests passed"
