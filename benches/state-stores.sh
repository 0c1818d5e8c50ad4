#!/usr/bin/env bash
# The state store under a team's load: `gantry ls` with 1,000 clusters x 3 nodes recorded, and a
# cluster-lock round trip (acquire + release), per store.
#
#   benches/state-stores.sh
#
# What it does (see benches/README.md):
#   1. builds gantry and the bench helpers in release (`cargo build --release -p gantry-cli
#      --examples`; honours CARGO_TARGET_DIR);
#   2. in a temporary GANTRY_HOME: `gantry up` of a real 3-node local cluster, then
#      `examples/state-seed` copies its records until BENCH_CLUSTERS clusters are recorded (the
#      copies have records only, no machines);
#   3. times `gantry ls` and `gantry ls -o json` with hyperfine (BENCH_RUNS runs after 3 warm-up
#      runs) and BENCH_LOCKS lock round trips with `examples/state-lock`;
#   4. prints a markdown table and writes/replaces the section "## State stores: ls of 1,000
#      clusters and a lock round trip" in BENCHMARKS.md, then destroys the real cluster.
#
# Stores measured: SQLite (the home's own state.db). PostgreSQL and etcd join this table, each
# against its client's floor (psql, etcdctl), when gantry opens those stores.
# Knobs: BENCH_CLUSTERS (1000), BENCH_RUNS (20), BENCH_LOCKS (500), BENCH_OUT (BENCHMARKS.md;
# "-" for none), BENCH_SKIP_BUILD=1, BENCH_GANTRY=PATH (then the helpers are looked for in
# PATH's directory's examples/). Only 127.0.0.0/8 is used (the local nodes).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
CLUSTERS=${BENCH_CLUSTERS:-1000}
RUNS=${BENCH_RUNS:-20}
LOCKS=${BENCH_LOCKS:-500}
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
command -v hyperfine >/dev/null || die "hyperfine not found (scripts/install-deps.sh installs it)"
command -v jq >/dev/null || die "jq not found (apt-get install jq)"
((CLUSTERS >= 2)) || die "BENCH_CLUSTERS must be at least 2"
unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_STATE GANTRY_LOG || true

cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [[ -n ${BENCH_GANTRY:-} ]]; then
  GANTRY=$(cd "$(dirname "$BENCH_GANTRY")" && pwd)/$(basename "$BENCH_GANTRY")
  BUILD_KIND="binary given by BENCH_GANTRY"
else
  if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release -p gantry-cli --examples"
    cargo build --release -p gantry-cli --bins --examples >&2 || die "build failed"
  fi
  GANTRY=$(cd "$TARGET_DIR/release" && pwd)/gantry
  BUILD_KIND='release build (`cargo build --release -p gantry-cli`)'
fi
EXAMPLES=$(dirname "$GANTRY")/examples
for b in "$GANTRY" "$EXAMPLES/state-seed" "$EXAMPLES/state-lock"; do
  [[ -x $b ]] || die "$b not found (cargo build -p gantry-cli --bins --examples)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-state-bench.XXXXXX")
export GANTRY_HOME=$WORK/home
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$GANTRY" destroy seed --yes >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%s\n' "apiVersion: gantry/v1" "name: seed" "provider: local" "pools:" "  - name: db" \
  "    count: 3" >"$WORK/seed.yaml"
log "gantry up of the 3-node cluster whose records are copied"
"$GANTRY" up -f "$WORK/seed.yaml" >/dev/null 2>"$WORK/up.err" || {
  tail -n 20 "$WORK/up.err" >&2
  die "gantry up failed"
}
"$EXAMPLES/state-seed" "$GANTRY_HOME/state.db" default seed $((CLUSTERS - 1)) >&2
listed=$("$GANTRY" ls -o json | jq 'length')
[[ $listed == "$CLUSTERS" ]] || die "gantry ls lists $listed clusters, not $CLUSTERS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "hyperfine: gantry ls (text and json), $RUNS runs each"
hyperfine -N -w 3 -r "$RUNS" --export-json "$WORK/ls.json" "$GANTRY ls" "$GANTRY ls -o json" >&2
ms() { jq -r ".results[$1].$2 * 1000 | . * 10 | round / 10" "$WORK/ls.json"; }
LS_MED=$(ms 0 median)
LS_MIN=$(ms 0 min)
LSJ_MED=$(ms 1 median)
LSJ_MIN=$(ms 1 min)
log "lock round trips: $LOCKS"
read -r LOCK_LINE < <("$EXAMPLES/state-lock" "$GANTRY_HOME/state.db" "$LOCKS")
lock_field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$LOCK_LINE"; }
LOCK_MED=$(awk -v u="$(lock_field median_us)" 'BEGIN { printf "%.2f", u / 1000 }')
LOCK_P90=$(awk -v u="$(lock_field p90_us)" 'BEGIN { printf "%.2f", u / 1000 }')
VERDICT=$(awk -v v="$LS_MED" 'BEGIN { if (v < 50) print "met"; else print "**NOT met**" }')
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$REPO" status --porcelain --untracked-files=no -- crates 2>/dev/null) ]] ||
  COMMIT="$COMMIT (with uncommitted changes)"

SECTION=$(
  render "$(
    cat <<'EOT'
## State stores: ls of 1,000 clusters and a lock round trip

`gantry ls` (text, and `-o json`) with @CLUSTERS@ clusters of 3 nodes recorded in the store (one
real local cluster; the others are copies of its records, with no machines), timed by hyperfine
(@RUNS@ runs after 3 warm-up runs; median and min in ms); a cluster-lock round trip (acquire, then
release) repeated @LOCKS@ times in one process (`examples/state-lock`; median and p90 in ms).

| store | `ls` median | `ls` min | `ls -o json` median | `ls -o json` min | lock round trip median | p90 |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| SQLite (`state.db`) | @LS_MED@ | @LS_MIN@ | @LSJ_MED@ | @LSJ_MIN@ | @LOCK_MED@ | @LOCK_P90@ |

Target: `ls` under 50 ms on SQLite: @VERDICT@ (@LS_MED@ ms). PostgreSQL and etcd are added to
this table, each against its client's floor, once gantry opens those stores.

- Date: @DATE@
- Machine: @NPROC@ CPUs; load average before measuring: @LOAD@
- gantry commit: @COMMIT@, @BUILD@
- Reproduce: `benches/state-stores.sh` (`BENCH_CLUSTERS`, `BENCH_RUNS`, `BENCH_LOCKS`)
EOT
  )" CLUSTERS="$CLUSTERS" RUNS="$RUNS" LOCKS="$LOCKS" LS_MED="$LS_MED" LS_MIN="$LS_MIN" \
    LSJ_MED="$LSJ_MED" LSJ_MIN="$LSJ_MIN" LOCK_MED="$LOCK_MED" LOCK_P90="$LOCK_P90" \
    VERDICT="$VERDICT" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" NPROC="$(nproc)" \
    LOAD="$LOAD_START" COMMIT="$COMMIT" BUILD="$BUILD_KIND"
)
echo
printf '%s\n' "$SECTION"
if [[ $OUT != - ]]; then
  printf '%s\n' "$SECTION" >"$WORK/section.md"
  python3 - "$OUT" "$WORK/section.md" <<'PY'
import pathlib, sys
out, section = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
heading = section.splitlines()[0]
text = out.read_text() if out.exists() else "# Benchmarks\n"
lines, kept, skipping, replaced = text.splitlines(keepends=True), [], False, False
for line in lines:
    if line.startswith("## "):
        if line.rstrip("\n") == heading:
            skipping, replaced = True, True
            kept.append(section + "\n")
            continue
        skipping = False
    if not skipping:
        kept.append(line)
if not replaced:
    kept.append("\n" + section + "\n")
out.write_text("".join(kept))
PY
  log "wrote $OUT"
fi
