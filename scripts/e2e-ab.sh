#!/usr/bin/env bash
# Interleaved before/after run of the end-to-end bench (host/benches/e2e.rs):
# builds the bench at OLD_REV (in a git worktree) and at the working tree,
# then runs them alternately, PAIRS times, swapping which goes first, and
# prints each run's margin over bare round trip + fsync, p99, and throughput.
# Usage: scripts/e2e-ab.sh OLD_REV [PAIRS]   (needs Mosquitto and target/plugins)
set -euo pipefail
old_rev=${1:?usage: scripts/e2e-ab.sh OLD_REV [PAIRS]}
pairs=${2:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${RELAY_AB_DIR:-${TMPDIR:-/tmp}/relay-e2e-ab}
mkdir -p "$work/out"
[ -d "$work/old" ] || git -C "$root" worktree add --detach "$work/old" "$old_rev"
git -C "$work/old" checkout --quiet --detach "$old_rev"
bench_bin() { # dir target-dir -> path of the built bench executable
  (cd "$1" && CARGO_TARGET_DIR=$2 cargo bench -p relay-host --bench e2e --no-run \
    --message-format=json 2>/dev/null) | grep -o '"executable":"[^"]*e2e-[^"]*"' | tail -1 | cut -d'"' -f4
}
old=$(bench_bin "$work/old" "$work/target")
new=$(bench_bin "$root" "$root/target")
export RELAY_PLUGIN_DIR=${RELAY_PLUGIN_DIR:-$root/target/plugins}
summary() { # file label -> one line
  awk -F'|' -v label="$2" '
    function v(s) { gsub(/[ ,*]/, "", s); return s + 0 }
    /^\| one fsync/ { fs = v($3) }
    /^\| bare broker round trip/ { rtt = v($3) }
    /echo plugin \(wasmtime\): send/ { p50 = v($3); p99 = v($4) }
    /^\| host, echo plugin \(wasmtime\) \|/ { rate = v($3); ratio = v($4) }
    END { printf "%-4s margin %+.3f ms  p99 %.3f ms  %6d/s  %.2f of native\n", label, p50 - rtt - fs, p99, rate, ratio }
  ' "$1"
}
for i in $(seq 1 "$pairs"); do
  if [ $((i % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$old; [ "$which" = new ] && bin=$new
    "$bin" --bench >"$work/out/$i-$which.txt" 2>"$work/out/$i-$which.err"
    echo "run $i $(summary "$work/out/$i-$which.txt" "$which")"
  done
done
