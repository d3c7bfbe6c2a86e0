#!/usr/bin/env bash
# Where an idle session's heap goes, by allocation site: a bench server
# (`tether bench-node server`) under heaptrack holds N idle sessions of one
# transport, is killed while they are idle (so "leaked" = held), and the
# allocations it still holds are printed per session, deepest first.
#
#   scripts/heap-profile.sh tls 2000        # ws, wss, tcp or tls
#   scripts/heap-profile.sh ws 2000 10      # the gateway, rooms of 10, one say each
#   scripts/heap-profile.sh ws 2000 10 10   # ... then 10 more says each
#
# Needs Debian's heaptrack and openssl, and rustfilt (cargo install rustfilt).
# heaptrack sees malloc's calls, not jemalloc's (the tether binary's
# allocator): the script builds its own binary with the system's malloc
# (release, without the `jemalloc` feature, in target/heap-profile).
set -euo pipefail
t=${1:-ws}; n=${2:-2000}; rooms=${3:-}; burst=${4:-0}
gw=(); rs=()
if [ -n "$rooms" ]; then gw=(--gateway); rs=(--room-size "$rooms"); fi
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p tether --no-default-features --target-dir "$root/target/heap-profile" \
  --manifest-path "$root/Cargo.toml" >&2
bin=$root/target/heap-profile/release/tether
dir=$(mktemp -d)
trap 'pkill -9 -f "bench-node server --transport $t" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
tls=(); ca=()
if [ "$t" = tls ] || [ "$t" = wss ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=CA:FALSE -days 1 2>/dev/null
  tls=(--cert c.pem --key k.pem); ca=(--ca c.pem)
fi
(sleep 120) | heaptrack -o "$dir/ht" "$bin" bench-node server --transport "$t" "${tls[@]}" "${gw[@]}" > srv.out 2> srv.err &
for _ in $(seq 100); do grep -qE '^[0-9]+$' srv.out 2>/dev/null && break; sleep 0.1; done
port=$(grep -E '^[0-9]+$' srv.out | head -1)
cmds=""; want=connected
if [ -n "$rooms" ]; then cmds="join"; want=joined; fi
if [ -n "$rooms" ] && [ "$burst" != 0 ]; then cmds="join
burst $burst"; want=said; fi
(if [ -n "$cmds" ]; then echo "$cmds"; fi; sleep 60) | "$bin" bench-node clients --port "$port" --n "$n" --transport "$t" "${ca[@]}" "${rs[@]}" > cl.out 2>&1 &
for _ in $(seq 600); do grep -q "$want" cl.out 2>/dev/null && break; sleep 0.1; done
sleep 3 # settled
pkill -9 -f "bench-node server --transport $t"
for _ in $(seq 100); do [ -s ht.zst ] && ! pgrep -f heaptrack_interpret >/dev/null && break; sleep 0.1; done
heaptrack_print -f ht.zst -F flame.txt --flamegraph-cost-type leaked > /dev/null 2>&1
rustfilt < flame.txt > flame.rs.txt
python3 - "$n" flame.rs.txt <<'PY'
import re, sys
n = int(sys.argv[1]); rows = []
for line in open(sys.argv[2]):
    stack, _, c = line.rstrip().rpartition(' ')
    rows.append((int(c), stack.split(';')))
rows.sort(key=lambda r: -r[0])
print(f"held per session: {sum(r[0] for r in rows) / n:.0f} bytes")
skip = re.compile(r'^(alloc::|core::|<alloc|<core|__rust|malloc|realloc|hashbrown|std::|0x|_\$LT\$alloc|_\$LT\$core)')
def clean(f):
    f = re.sub(r'::h[0-9a-f]{16}', '', f); f = re.sub(r'\s*\(.*\)$', '', f)
    for a, b in (('_$LT$', '<'), ('$GT$', '>'), ('$u20$', ' '), ('$u7b$', '{'), ('$u7d$', '}'), ('..', '::'), ('$C$', ',')):
        f = f.replace(a, b)
    return f
for c, st in rows[:20]:
    fr = [f for f in (clean(f) for f in st) if not skip.search(f)]
    print(f"{c / n:7.0f} B  " + ' <- '.join(list(reversed(fr))[:3])[:240])
PY
