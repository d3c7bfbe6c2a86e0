#!/usr/bin/env bash
# Past one process's file descriptors on one machine: starts a private
# redis-server and N `tether serve` cluster nodes sharing one WebSocket port
# (listen.reuse_port, docs/CLUSTER.md §1.1), runs `tether bench load` against
# them with the arguments given (their pids passed for CPU and memory), then
# stops everything it started.
#
#   scripts/local-cluster-load.sh [-n NODES] [-p PORT] [-N] -- BENCH-LOAD-ARGS…
#   scripts/local-cluster-load.sh -n 7 -- --sessions 100000 --rate 8000 \
#       --interval 25s --source 127.0.0.1-127.0.0.16 --duration 30s
#
# -N (root) runs it all in a private network namespace whose TCP
# established-connection hash table has 2M buckets: the host's is sized at
# boot (262 144 here) and, with both ends of 1M connections on one box, its
# chains show in every packet's lookup (docs/PERFORMANCE.md). The namespace
# is deleted at the end.
#
# Uses target/release/tether (build it first: cargo build --release -p tether),
# or the binary in TETHER_BIN.
# --outage needs root (nft). Figures: docs/PERFORMANCE.md.
set -euo pipefail
nodes=3
port=7601
netns=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) nodes="$2"; shift 2 ;;
    -p) port="$2"; shift 2 ;;
    -N) netns=1; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [-n NODES] [-p PORT] [-N] -- BENCH-LOAD-ARGS…" >&2; exit 2 ;;
  esac
done
if [[ $netns == 1 ]]; then
  ns="tether-load-$$"
  old="$(sysctl -n net.ipv4.tcp_child_ehash_entries)" || { echo "-N needs Linux 6.1+ (net.ipv4.tcp_child_ehash_entries)" >&2; exit 1; }
  # Read when a namespace is created: set, create, restore.
  sysctl -qw net.ipv4.tcp_child_ehash_entries=2097152
  ip netns add "$ns" || { sysctl -qw net.ipv4.tcp_child_ehash_entries="$old"; exit 1; }
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$old"
  trap 'ip netns del "$ns"' EXIT
  ip netns exec "$ns" ip link set lo up
  # In the background, so that a signal (Ctrl-C, a timeout) is handled at
  # once: passed on, waited for, then the namespace is deleted.
  ip netns exec "$ns" "$0" -n "$nodes" -p "$port" -- "$@" &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT
  trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
  wait "$child"
  exit $?
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TETHER_BIN:-$root/target/release/tether}"
[[ -x "$bin" ]] || { echo "no $bin: run cargo build --release -p tether first" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server (Debian: apt-get install redis-server)" >&2; exit 1; }
dir="$(mktemp -d /tmp/tether-local-cluster.XXXXXX)"
redis_port=$((port + 1000))
pids=()
cleanup() {
  [[ ${#pids[@]} -gt 0 ]] && kill "${pids[@]}" 2>/dev/null || true
  # Nodes drain on SIGTERM (their clients are told to come back): give them
  # the drain window before killing what is left.
  for _ in $(seq 60); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  [[ ${#pids[@]} -gt 0 ]] && kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --logfile "$dir/redis.log" --dir "$dir"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 1 "$nodes"); do
  printf '%s\n' '[listen]' 'tcp = "off"' "ws = \"127.0.0.1:$port\"" 'reuse_port = true' \
    '[admin]' "listen = \"127.0.0.1:$((port + 10 + i))\"" '[demo]' 'listen = "off"' '[log]' 'level = "warn"' \
    '[cluster]' "redis = \"redis://127.0.0.1:$redis_port\"" "node_id = \"load$i\"" > "$dir/node$i.toml"
  # TOKIO_WORKER_THREADS=1 (in the environment) costs less CPU per held
  # session but made reconnect storms slower (docs/PERFORMANCE.md).
  "$bin" serve --config "$dir/node$i.toml" > "$dir/node$i.log" 2>&1 &
  pids+=($!)
done
sleep 2
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { cat "$dir"/node*.log >&2; exit 1; }; done
echo "$nodes nodes on ws://127.0.0.1:$port/tether (pids ${pids[*]}), Redis on $redis_port"
# In the background for the same reason: a signal stops it, then cleanup runs.
"$bin" bench load "ws://127.0.0.1:$port/tether" --gateway-pid "$(IFS=,; echo "${pids[*]}")" "$@" &
load=$!
trap 'kill -TERM "$load" 2>/dev/null; wait "$load"; exit 130' INT
trap 'kill -TERM "$load" 2>/dev/null; wait "$load"; exit 143' TERM
wait "$load"
echo "Redis: $(redis-cli -p "$redis_port" info memory | grep used_memory_human)"
