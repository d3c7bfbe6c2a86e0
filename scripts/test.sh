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

install_debs() {
  step "installing $* (Debian packages)"
  local sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$@"
}

# A C compiler and make: ring's build needs the compiler, jemalloc's (the
# tether binary's allocator, tikv-jemalloc-sys) runs configure and make.
build_tools=()
command -v cc >/dev/null 2>&1 || build_tools+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || build_tools+=(make)
if ((${#build_tools[@]})); then install_debs "${build_tools[@]}"; fi

step "format (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings


# The cluster's tests run against Debian's redis-server: one instance of our
# own on a free loopback port, in a temporary directory, stopped on exit.
command -v redis-server >/dev/null 2>&1 || install_debs redis-server
redis_dir=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" \
  --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
stop_redis() {
  # Wait until it is gone (it may still be writing its log), so that its
  # directory can be removed; a leftover temporary directory never fails the run.
  if [ -f "$redis_dir/redis.pid" ]; then
    local pid
    pid=$(cat "$redis_dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$redis_dir" 2>/dev/null || true
}
trap stop_redis EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done
export TETHER_REDIS_URL="redis://127.0.0.1:$redis_port"
step "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on $TETHER_REDIS_URL"

# Node.js and Chromium: the example application's backend
# (examples/chat-backend) runs in the gateway's tests; the browser client's
# TypeScript must build to exactly the committed dist/tether.js (the gateway
# embeds that file), its unit tests run in node (test/rooms-fixtures.test.mjs
# reads fixtures/room-protocol.json, as the gateway's Rust test does), and the
# browser tests drive Debian's chromium through playwright-core.
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

step "tests (unit, integration, doc; includes 1000 fixed fault schedules)"
cargo test --workspace -- --skip lab_suite

# The client runtime builds for Windows too (its network watcher there is
# if-watch's): checked with the mingw-w64 C compiler that ring's build needs.
# (macOS is not checked: ring's build needs Apple's SDK.)
step "cargo check -p tether-runtime --target x86_64-pc-windows-gnu"
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || install_debs gcc-mingw-w64-x86-64
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu
cargo check -q -p tether-runtime --target x86_64-pc-windows-gnu

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
step "fault lab: 15 scenarios in network namespaces, in parallel (about 100 s)"
# The lab is the tether-lab crate; its test lives with the binary, which it
# runs as `tether lab suite` (the lab's nodes are `tether lab-node`).
cargo test -p tether --test lab -- --nocapture

# A further batch of fault schedules whose seeds move daily, so coverage grows
# run after run. A failure prints its seed and the command replaying it.
first=${TETHER_SIM_FIRST:-$(( ($(date +%s) / 86400) * 10000 ))}
step "4000 more fault schedules from seed $first"
TETHER_SIM_FIRST=$first TETHER_SIM_SCHEDULES=4000 \
  cargo test -q -p tether-sim --test fault_schedules -- --nocapture

step "fuzzing: nightly toolchain and cargo-fuzz (docs/FUZZING.md)"
# Every cargo-fuzz target in fuzz/ runs for a bounded time on every run,
# after replaying the inputs that once broke it (fuzz/regressions/<target>/).
# A failure stops the script and prints the command that reproduces it.
# TETHER_FUZZ_SECONDS sets the time per target. No AddressSanitizer: the core
# forbids unsafe code, and the targets run about six times faster without it;
# overflow checks and debug assertions stay on.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
fuzz_secs=${TETHER_FUZZ_SECONDS:-60}
fuzz=(cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none)
fuzz_failed() { # target, input, log
  grep -A 4 'panicked at' "$3" || tail -n 40 "$3"
  echo "fuzz target $1 failed on $2 (whole log: $3)" >&2
  echo "reproduce: ${fuzz[*]} $1 $2" >&2
  exit 1
}
step "fuzzing: build the targets"
cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer none
mkdir -p fuzz/target
for target in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
  log=fuzz/target/fuzz-"$target".log
  for input in fuzz/regressions/"$target"/*; do
    [ -f "$input" ] || continue
    "${fuzz[@]}" "$target" "$input" >"$log" 2>&1 || fuzz_failed "$target" "$input" "$log"
  done
  step "fuzzing $target for $fuzz_secs s"
  mkdir -p fuzz/corpus/"$target" fuzz/artifacts/"$target"
  if ! "${fuzz[@]}" "$target" -- -max_total_time="$fuzz_secs" -timeout=10 -max_len=4096 \
    -print_final_stats=1 >"$log" 2>&1; then
    fuzz_failed "$target" "$(ls -t fuzz/artifacts/"$target"/* 2>/dev/null | head -n 1)" "$log"
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
done

step "all tests passed"
