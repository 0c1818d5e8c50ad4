#!/usr/bin/env bash
# Scale benchmark for the local provider: `up`, `run -- true` and `destroy` of 200 and 1,000
# local nodes, in one run, so that the cost per node can be compared across sizes.
#
#   benches/local-scale.sh
#
# What it does (see benches/README.md):
#   1. builds gantry in release (`cargo build --release -p gantry-cli`, honours CARGO_TARGET_DIR);
#   2. in a temporary GANTRY_HOME, BENCH_RUNS rounds; each round, for every size in BENCH_SIZES:
#      times `gantry up` until every node answers SSH (what a new user waits for), checks that
#      every node runs with an SSH endpoint; times `gantry run CLUSTER -- true` (default
#      concurrency) and checks `N/N ok`; times `gantry destroy CLUSTER --yes` and checks that
#      nothing is left: no cluster, no node directory, no agent process of this home;
#   3. prints a markdown table (medians, min, max; per-node cost; the 1,000/200 ratio of up and
#      destroy against the issue's targets) and writes/replaces the section
#      "## Local provider: 200 and 1,000 nodes" in BENCHMARKS.md.
#
# Knobs (environment): BENCH_SIZES ("200 1000", spaces or commas; the ratio compares the last
# size with the first), BENCH_RUNS (3), BENCH_OUT (BENCHMARKS.md at the repo root; "-" for none),
# BENCH_SKIP_BUILD=1 (use the existing release binary), BENCH_GANTRY=PATH (use that binary, no
# build). A quick check that the script works: BENCH_SIZES=3,6 BENCH_RUNS=1 BENCH_OUT=- (what
# benches/check.sh runs, with the debug binary).
# All traffic stays on 127.0.0.0/8: local nodes listen on their own 127.x.y.z address. Sizes
# are run one at a time and every cluster is destroyed (and checked gone) before the next, so
# at most max(BENCH_SIZES) agents run at once; on exit (also on failure or Ctrl-C) whatever is
# left is destroyed and any agent of the temporary home is killed by its pid.
set -euo pipefail

SIZES_GIVEN=${BENCH_SIZES:-200 1000}
read -r -a SIZES <<<"${SIZES_GIVEN//,/ }"
RUNS=${BENCH_RUNS:-3}
CLUSTER=scale
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
set -E
trap 'log "FAIL: line $LINENO: $BASH_COMMAND"' ERR

((${#SIZES[@]} >= 1)) || die "BENCH_SIZES is empty"
((RUNS >= 1)) || die "BENCH_RUNS must be at least 1"
have jq || die "jq not found (apt-get install jq)"

# gantry's own environment must not change what is measured.
unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_CONCURRENCY GANTRY_LOG GANTRY_LOCK_TIMEOUT || true

# --- 1. build ----------------------------------------------------------------------------------
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [[ -n ${BENCH_GANTRY:-} ]]; then
  BUILD_KIND="binary given by BENCH_GANTRY=$BENCH_GANTRY"
  GANTRY=$(cd "$(dirname "$BENCH_GANTRY")" && pwd)/$(basename "$BENCH_GANTRY")
else
  if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release -p gantry-cli (target dir: $TARGET_DIR)"
    cargo build --release -p gantry-cli >&2 || die "cargo build --release -p gantry-cli failed"
  fi
  BUILD_KIND='release build (`cargo build --release -p gantry-cli`)'
  GANTRY=$(cd "$TARGET_DIR/release" && pwd)/gantry
fi
[[ -x $GANTRY ]] || die "$GANTRY not found"

# --- temporary home and cleanup ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-scale.XXXXXX")
export GANTRY_HOME=$WORK/home
agents_left() { pgrep -f -- "--node-dir $GANTRY_HOME/" || true; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -d $GANTRY_HOME/local ]]; then
    log "cleanup: destroying $CLUSTER"
    "$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>&1 || true
  fi
  local left
  left=$(agents_left)
  if [[ -n $left ]]; then
    log "cleanup: killing $(wc -w <<<"$left") agent(s) of this run left alive"
    # By pid, each one found by its own home's node directory on its command line.
    for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
    rc=1
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

spec() { # spec N -> the spec file of an N-node cluster
  local f=$WORK/spec-$1.yaml
  printf '%s\n' "apiVersion: gantry/v1" "name: $CLUSTER" "provider: local" "pools:" \
    "  - name: n" "    count: $1" >"$f"
  printf '%s' "$f"
}

# timed KEY CMD...: runs CMD once (it must exit 0), appends its wall time in seconds to
# $WORK/KEY.times; its stdout and stderr go to $WORK/last.out and $WORK/last.err.
timed() {
  local key=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@" >"$WORK/last.out" 2>"$WORK/last.err" || {
    tail -n 20 "$WORK/last.err" >&2
    die "$key: $* failed"
  }
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", (b - a) / 1e9 }' | tee -a "$WORK/$key.times" |
    { read -r s; log "$key: $s s"; }
}
# stats KEY -> "median min max"
stats() {
  sort -g "$WORK/$1.times" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}

# --- 2. measure ------------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= RUNS; round++)); do
  for n in "${SIZES[@]}"; do
    log "round $round/$RUNS, $n nodes"
    timed "up-$n" "$GANTRY" up -f "$(spec "$n")"
    "$GANTRY" show "$CLUSTER" --output json >"$WORK/show.json"
    running=$(jq '[.nodes[] | select(.state == "running" and .ssh != null)] | length' "$WORK/show.json")
    [[ $running == "$n" ]] || die "after up: $running of $n nodes running with an SSH endpoint"

    timed "run-$n" "$GANTRY" run "$CLUSTER" -- true
    grep -qx "$n/$n ok" "$WORK/last.err" || {
      tail -n 5 "$WORK/last.err" >&2
      die "run: not $n/$n ok"
    }

    timed "destroy-$n" "$GANTRY" destroy "$CLUSTER" --yes
    [[ $("$GANTRY" ls --output json | jq -c .) == "[]" ]] || die "gantry ls is not [] after destroy"
    [[ -z $(ls -A "$GANTRY_HOME/local/default" 2>/dev/null) ]] ||
      die "node directories left in $GANTRY_HOME/local/default"
    # Agents are gone when destroy returns (it waits for every node's processes).
    [[ -z $(agents_left) ]] || die "agents still running after destroy: $(echo $(agents_left))"
  done
done

# --- 3. report ---------------------------------------------------------------------------------
FIRST=${SIZES[0]}
LAST=${SIZES[${#SIZES[@]} - 1]}
per_node() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.1f", t * 1000 / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
# verdict VALUE LIMIT UNIT -> "met (VALUE UNIT < LIMIT UNIT)" or "**NOT met** (...)"
verdict() {
  awk -v v="$1" -v l="$2" -v u="$3" 'BEGIN {
    if (v < l) printf "met (%s%s < %s%s)", v, u, l, u; else printf "**NOT met** (%s%s >= %s%s)", v, u, l, u }'
}
ROWS=$WORK/rows.md
: >"$ROWS"
for what in up run destroy; do
  for n in "${SIZES[@]}"; do
    read -r med min max < <(stats "$what-$n")
    case $what in
    up) cmd="gantry up -f SPEC (until every node answers SSH)" ;;
    run) cmd="gantry run $CLUSTER -- true" ;;
    destroy) cmd="gantry destroy $CLUSTER --yes" ;;
    esac
    printf '| `%s` | %s | %s | %s | %s | %s |\n' "$cmd" "$n" "$med" "$min" "$max" \
      "$(per_node "$med" "$n")" >>"$ROWS"
  done
done
read -r UP_FIRST _ _ < <(stats "up-$FIRST")
read -r UP_LAST _ _ < <(stats "up-$LAST")
read -r DE_FIRST _ _ < <(stats "destroy-$FIRST")
read -r DE_LAST _ _ < <(stats "destroy-$LAST")
read -r RUN_LAST _ _ < <(stats "run-$LAST")
UP_RATIO=$(ratio "$UP_LAST" "$UP_FIRST")
DE_RATIO=$(ratio "$DE_LAST" "$DE_FIRST")
SIZE_RATIO=$(ratio "$LAST" "$FIRST")

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Uncommitted changes to the product (not to the benchmark itself) are part of what was measured.
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!benches' ':!BENCHMARKS.md' 2>/dev/null) ]]; then
  COMMIT="$COMMIT (with uncommitted changes in the work tree)"
fi
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)

SECTION=$WORK/section.md
{
  if [[ "${SIZES[*]}" == "200 1000" ]]; then
    printf '%s\n\n' "## Local provider: 200 and 1,000 nodes"
  else
    printf '%s\n\n' "## Local provider: $(echo "${SIZES[@]}" | sed 's/ /, /g') nodes"
  fi
  printf '%s\n' "One local cluster of each size, brought up until every node answers SSH, then \`true\` run on" \
    "every node, then destroyed (every node's processes gone, checked). Sizes $(echo "${SIZES[@]}"), $RUNS" \
    "round(s), sizes interleaved within each round, median, min and max in seconds; per node = median" \
    "/ nodes, in ms."
  printf '\n%s\n%s\n' "| command | nodes | median (s) | min | max | per node (ms) |" \
    "| --- | ---: | ---: | ---: | ---: | ---: |"
  cat "$ROWS"
  printf '\n'
  printf '%s\n' "Cost against size ($LAST/$FIRST nodes, ${SIZE_RATIO}x the nodes): \`up\` ${UP_RATIO}x, \`destroy\` ${DE_RATIO}x" \
    "(target: under 6x: up $(verdict "$UP_RATIO" 6 x), destroy $(verdict "$DE_RATIO" 6 x))."
  if [[ $LAST == 1000 ]]; then
    printf '%s\n' "Targets for 1,000 nodes: \`up\` $(verdict "$UP_LAST" 15 ' s'), \`destroy\` $(verdict "$DE_LAST" 5 ' s')," \
      "\`run -- true\` $(verdict "$RUN_LAST" 3 ' s')."
  fi
  printf '\n'
  printf '%s\n' "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')" \
    "- Machine: $(nproc) CPUs, $CPU; $(uname -sr); load average before measuring: $LOAD_START" \
    "- gantry commit: $COMMIT, $BUILD_KIND" \
    "- Reproduce: \`benches/local-scale.sh\` (\`BENCH_SIZES\`, \`BENCH_RUNS\`; see benches/README.md)"
} >"$SECTION"

echo
cat "$SECTION"

if [[ $OUT != - ]]; then
  write_section "$OUT" "$SECTION"
  log "wrote $OUT"
fi
