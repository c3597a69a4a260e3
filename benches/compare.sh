#!/usr/bin/env bash
# Side-by-side benchmark: openraft (benches/openraft-baseline) against kommander (examples/bench.rs),
# both built in release with mimalloc and run ALTERNATELY on this machine (round r: openraft, then
# kommander), so that drifting machine load hits both. Every run's full output stays in the log
# dir; the RESULT lines both print on stderr are aggregated into medians across rounds.
#
#   benches/compare.sh [--rounds 3] [--seconds 3] [--clients 1,64,256,1024] [--partitions 1,16]
#                      [--openraft-args "--pipeline --minimal-config"]
#
# Environment: KOMMANDER_BENCH_TARGET (default /var/tmp/kbench), OPENRAFT_BENCH_TARGET (default
# /var/tmp/kbench-openraft): cargo target dirs; LOG_DIR (default /tmp/compare-<timestamp>).
set -euo pipefail

usage() {
    sed -n '7,8p' "$0" | sed 's/^#   //'
    exit "${1:-0}"
}

rounds=3
window=3
clients=1,64,256,1024
partitions=1,16
openraft_args=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
        --seconds) window=${2:?--seconds needs a value}; shift 2 ;;
        --clients) clients=${2:?--clients needs a value}; shift 2 ;;
        --partitions) partitions=${2:?--partitions needs a value}; shift 2 ;;
        --openraft-args) openraft_args=${2?--openraft-args needs a value}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --rounds must be a positive integer" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kommander_target=${KOMMANDER_BENCH_TARGET:-/var/tmp/kbench}
openraft_target=${OPENRAFT_BENCH_TARGET:-/var/tmp/kbench-openraft}
log_dir=${LOG_DIR:-/tmp/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$log_dir"
results=$(mktemp "${TMPDIR:-/tmp}/compare-results.XXXXXX")
trap 'rm -f "$results"' EXIT

echo "date: $(date -Is)"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
if head=$(git -C "$root" rev-parse --short HEAD 2>/dev/null); then
    git -C "$root" diff --quiet HEAD 2>/dev/null || head+=" + uncommitted changes"
    echo "kommander: $head"
fi
echo "rounds $rounds, window $window s, clients $clients, kommander partitions $partitions${openraft_args:+, openraft args: $openraft_args}"
echo "logs: $log_dir"

build() { # name, dir, cargo args...
    local name=$1 dir=$2
    shift 2
    echo "building $name..."
    if ! (cd "$dir" && cargo build "$@") >"$log_dir/build-$name.log" 2>&1; then
        tail -n 30 "$log_dir/build-$name.log" >&2
        echo "compare.sh: building $name failed (full log: $log_dir/build-$name.log)" >&2
        exit 1
    fi
}
build kommander "$root" --release --features mimalloc --example bench --target-dir "$kommander_target"
build openraft "$root/benches/openraft-baseline" --release --features mimalloc --target-dir "$openraft_target"
kommander_bin=$kommander_target/release/examples/bench
openraft_bin=$openraft_target/release/openraft-baseline

run() { # round, name, binary, args...
    local round=$1 name=$2 bin=$3
    shift 3
    local out=$log_dir/$name-round$round
    echo "round $round/$rounds: $name"
    if ! "$bin" "$@" >"$out.out" 2>"$out.err"; then
        echo "warning: $name exited non-zero in round $round (see $out.err)" >&2
    fi
    grep '^RESULT ' "$out.err" | sed "s/^/round=$round /" >>"$results" || true
}
for ((round = 1; round <= rounds; round++)); do
    # shellcheck disable=SC2086 # --openraft-args is split into words on purpose
    run "$round" openraft "$openraft_bin" --seconds "$window" --clients "$clients" $openraft_args
    run "$round" kommander "$kommander_bin" --seconds "$window" --clients "$clients" --partitions "$partitions"
done
cp "$results" "$log_dir/results.txt"

python3 - "$results" "$clients" "$partitions" "$rounds" <<'EOF'
import re
import statistics
import sys

path, clients, partitions, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
clients = [int(c) for c in clients.split(",")]
partitions = [int(p) for p in partitions.split(",")]

# (system, partitions, clients) -> {round: {field: value}}
runs = {}
for line in open(path):
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    key = (fields["system"], int(fields["partitions"]), int(fields["clients"]))
    runs.setdefault(key, {})[int(fields["round"])] = {
        "ops": float(fields["ops"]),
        "p50": float(fields["p50_ms"]),
        "p99": float(fields["p99_ms"]),
        "errors": int(fields["errors"]),
    }

def median(key, field):
    values = [r[field] for r in runs.get(key, {}).values()]
    return statistics.median(values) if values else None

def fmt(value, spec):
    return "-" if value is None else format(value, spec)

def ratio(ours, theirs):
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}x"

openraft = {c: median(("openraft", 1, c), "ops") for c in clients}
best = max((v for v in openraft.values() if v is not None), default=None)
best_at = next((c for c, v in openraft.items() if v == best), None)

cols = [f"{'clients':>7}", f"{'openraft ops/s':>14} {'p50 ms':>7} {'p99 ms':>7}"]
for p in partitions:
    name = f"kommander P={p}"
    if p == 1:
        cols.append(f"{name + ' ops/s':>21} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}")
    else:
        cols.append(f"{name + ' ops/s':>22} {'vs best':>7}")
print(f"\nmedians over {rounds} round(s); P=1 ratio: vs openraft at the same client count; "
      f"P>1 'vs best': vs openraft's best single-group median ({fmt(best, '.0f')} ops/s at {best_at} clients)")
print(" | ".join(cols))
for c in clients:
    key = ("openraft", 1, c)
    row = [f"{c:>7}", f"{fmt(openraft[c], '.0f'):>14} {fmt(median(key, 'p50'), '.3f'):>7} "
                      f"{fmt(median(key, 'p99'), '.3f'):>7}"]
    for p in partitions:
        key = ("kommander", p, c)
        ops = median(key, "ops")
        if p == 1:
            row.append(f"{fmt(ops, '.0f'):>21} {fmt(median(key, 'p50'), '.3f'):>7} "
                       f"{fmt(median(key, 'p99'), '.3f'):>7} {ratio(ops, openraft[c]):>6}")
        else:
            row.append(f"{fmt(ops, '.0f'):>22} {ratio(ops, best):>7}")
    print(" | ".join(row))

print("\nper-round ops/s (spread = (max - min) / median; errors summed over rounds):")
systems = [("openraft", 1)] + [("kommander", p) for p in partitions]
for system, p in systems:
    for c in clients:
        by_round = runs.get((system, p, c), {})
        ops = [by_round[r]["ops"] if r in by_round else None for r in range(1, rounds + 1)]
        present = [v for v in ops if v is not None]
        spread = (f"{(max(present) - min(present)) / statistics.median(present) * 100:.0f}%"
                  if present and statistics.median(present) else "-")
        errors = sum(r["errors"] for r in by_round.values())
        label = "openraft" if system == "openraft" else f"kommander P={p}"
        print(f"  {label:<15} clients={c:<5} " + " ".join(f"{fmt(v, '.0f'):>8}" for v in ops)
              + f"   spread {spread:>4}   errors {errors}")
EOF
