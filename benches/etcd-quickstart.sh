#!/usr/bin/env bash
# How long the quickstart's etcd cluster takes once gantry is built:
#   1. `gantry up -f examples/etcd.yaml` from nothing to a healthy 3-member etcd cluster;
#   2. growing it to 5 members (`up` of the same spec with count 5: two new nodes, each
#      announced with `member add` and healthy before the next).
# Median, min and max of BENCH_RUNS (5) runs each, destroying between runs, in a temporary
# GANTRY_HOME; every run is checked (etcd reports 3, then 5, started members).
#
#   benches/etcd-quickstart.sh            # uses the quickstart's build (target/debug/gantry)
#   BENCH_GANTRY=target/release/gantry benches/etcd-quickstart.sh
#
# Writes/replaces the section "## Blueprints: the etcd quickstart" in BENCHMARKS.md
# (BENCH_OUT=- for none). All traffic stays on 127.0.0.0/8.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/benches/lib.sh"
RUNS=${BENCH_RUNS:-5}
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
cd "$REPO"
scripts/install-deps.sh quickstart
if [[ -z ${BENCH_GANTRY:-} ]]; then
  cargo build --locked -p gantry-cli >&2
  GANTRY=${CARGO_TARGET_DIR:-$REPO/target}/debug/gantry
else
  GANTRY=$BENCH_GANTRY
fi
profile=$([[ $GANTRY == */release/* ]] && echo release || echo debug)
unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_LOG GANTRY_LOCK_TIMEOUT || true
WORK=$(mktemp -d)
export GANTRY_HOME=$WORK/home
cleanup() { "$GANTRY" destroy etcd --yes >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

spec3=$REPO/examples/etcd.yaml
spec5=$WORK/etcd5.yaml
sed 's/count: 3/count: 5/' "$spec3" > "$spec5"
grep -q 'count: 5' "$spec5" || { echo "could not derive the 5-node spec" >&2; exit 1; }

now() { date +%s%N; }
members() {
  "$GANTRY" run etcd/member-1 -- 'etcdctl --endpoints=http://$GANTRY_NODE_ADDRESS:2379 member list' 2>/dev/null |
    grep -c ', started, ' || true
}
timed_up() { # spec expected-members -> prints seconds
  local t0 t1
  t0=$(now)
  "$GANTRY" up -f "$1" >/dev/null 2>"$WORK/up.err" || { cat "$WORK/up.err" >&2; exit 1; }
  t1=$(now)
  [[ $(members) == "$2" ]] || { echo "expected $2 started members, etcd says $(members)" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f %.3f %.3f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

up3=() grow=()
for i in $(seq 1 "$RUNS"); do
  "$GANTRY" destroy etcd --yes >/dev/null 2>&1 || true
  up3+=("$(timed_up "$spec3" 3)")
  # etcd refuses new members until its leader has been connected to every member for its 5 s
  # health interval; a grow right after forming would measure that wait, not gantry.
  sleep 6
  grow+=("$(timed_up "$spec5" 5)")
  echo "run $i: up ${up3[-1]} s, grow to 5 ${grow[-1]} s" >&2
done
read -r m3 lo3 hi3 < <(printf '%s\n' "${up3[@]}" | stats)
read -r m5 lo5 hi5 < <(printf '%s\n' "${grow[@]}" | stats)

IFS= read -r -d '' report <<'EOT' || true
## Blueprints: the etcd quickstart

`benches/etcd-quickstart.sh` — @DATE@, commit @COMMIT@, @PROFILE@ build,
@CPUS@ CPUs (@CPU@), etcd @ETCD@, @RUNS@ runs each.

| what | median (s) | min | max |
| --- | ---: | ---: | ---: |
| `gantry up -f examples/etcd.yaml`: 3 nodes to a healthy 3-member etcd cluster | @M3@ | @LO3@ | @HI3@ |
| grow it to 5 (`up` with count 5; members join one at a time) | @M5@ | @LO5@ | @HI5@ |

Each run is checked: etcd lists 3, then 5, started members. The grow starts 6 s after the
cluster formed: etcd refuses `member add` until its leader has been connected to every member
for 5 s (a grow sooner still works — the join retries — but then measures that wait). The same
rule dominates the grow itself: members join one at a time, and the second new member's
`member add` is refused until the leader has been connected to the first new one for 5 s.
EOT
section=$(render "$report" DATE="$(date -u +%Y-%m-%d)" COMMIT="$(git rev-parse --short HEAD)" \
  PROFILE="$profile" CPUS="$(nproc)" CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
  ETCD="$(etcd --version | awk 'NR==1 {print $3}')" RUNS="$RUNS" \
  M3="$m3" LO3="$lo3" HI3="$hi3" M5="$m5" LO5="$lo5" HI5="$hi5")
echo "$section"
if [[ $OUT != - ]]; then
  python3 - "$OUT" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pat = re.compile(r"^## Blueprints: the etcd quickstart\n.*?(?=^## |\Z)", re.S | re.M)
text = pat.sub(lambda _: section + "\n", text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
fi
