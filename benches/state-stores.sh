#!/usr/bin/env bash
# The state store under a team's load: `gantry ls` with 1,000 clusters x 3 nodes recorded, and a
# cluster-lock round trip (acquire + release), per store.
#
#   benches/state-stores.sh
#
# What it does (see benches/README.md):
#   1. builds gantry and the bench helpers in release (`cargo build --release -p gantry-cli
#      --examples`; honours CARGO_TARGET_DIR);
#   2. for each store of BENCH_STORES (SQLite: the home's state.db; PostgreSQL 15 and etcd 3.4:
#      started by `scripts/services.sh` on free loopback ports, stopped by PID), in a temporary
#      GANTRY_HOME with GANTRY_STATE naming the store: `gantry up` of a real 3-node local
#      cluster, then `examples/state-seed` copies its records until BENCH_CLUSTERS clusters are
#      recorded (the copies have records only, no machines);
#   3. times `gantry ls` and `gantry ls -o json` with hyperfine (BENCH_RUNS runs after 3 warm-up
#      runs), in the same hyperfine run the store's own client reading the same rows (`psql -c
#      'select ...'` of the project's clusters joined with their nodes; `etcdctl get --prefix`
#      of the project's cluster and node keys), and BENCH_LOCKS lock round trips with
#      `examples/state-lock` beside one `etcdctl put` (etcd fsyncs every write);
#   4. prints a markdown table and writes/replaces the section "## State stores: ls of 1,000
#      clusters and a lock round trip" in BENCHMARKS.md; destroys the real cluster of each store.
#
# Knobs: BENCH_STORES ("sqlite postgres etcd"), BENCH_CLUSTERS (1000), BENCH_RUNS (20),
# BENCH_LOCKS (500), BENCH_OUT (BENCHMARKS.md; "-" for none), BENCH_SKIP_BUILD=1,
# BENCH_GANTRY=PATH (then the helpers are looked for in PATH's directory's examples/). Only
# 127.0.0.0/8 is used (the local nodes, the servers).
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

read -r -a STORES <<<"${BENCH_STORES:-sqlite postgres etcd}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-state-bench.XXXXXX")
export GANTRY_HOME=$WORK/home
# A shared store (PostgreSQL, etcd) needs a key provider for the project's sealed SSH key: the
# same key file for every store of the run.
export GANTRY_KEY_PROVIDER=keyfile:$WORK/team.key
SERVER_PID=
stop_server() {
  [[ -z $SERVER_PID ]] || "$REPO/scripts/services.sh" stop "$SERVER_PID" >/dev/null 2>&1 || true
  SERVER_PID=
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$GANTRY" destroy seed --yes >/dev/null 2>&1 || true
  stop_server
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
printf '%s\n' "apiVersion: gantry/v1" "name: seed" "provider: local" "pools:" "  - name: db" \
  "    count: 3" >"$WORK/seed.yaml"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=$WORK/rows.md
FLOORS=$WORK/floors.md
: >"$ROWS"
: >"$FLOORS"
LS_SQLITE=
ms() { jq -r ".results[$2].$3 * 1000 | . * 10 | round / 10" "$1"; }
for store in "${STORES[@]}"; do
  FLOOR_NAME=
  FLOOR_CMD=
  PUT_CMD=
  case $store in
  sqlite)
    URL="sqlite://$GANTRY_HOME/state.db"
    LABEL='SQLite (`state.db`)'
    ;;
  postgres)
    read -r port SERVER_PID dir < <(SERVICES_WATCH_PID=$$ "$REPO/scripts/services.sh" start postgres) ||
      die "scripts/services.sh start postgres failed"
    # psql takes the password from the environment: no command line holds it.
    PGPASSWORD=$(cat "$dir/password")
    export PGPASSWORD
    URL="postgres://gantry:$PGPASSWORD@127.0.0.1:$port/postgres"
    LABEL='PostgreSQL 15 (loopback)'
    FLOOR_NAME='`psql -c` of the same rows'
    FLOOR_CMD="psql postgresql://gantry@127.0.0.1:$port/postgres -Atq -c \"select c.*, n.* from clusters c left join nodes n on n.project = c.project and n.cluster = c.name where c.project = 'default' order by c.name, n.pool, n.idx\""
    ;;
  etcd)
    read -r port SERVER_PID _ < <(SERVICES_WATCH_PID=$$ "$REPO/scripts/services.sh" start etcd) ||
      die "scripts/services.sh start etcd failed"
    URL="etcd://127.0.0.1:$port/bench"
    LABEL='etcd 3.4 (one member, loopback)'
    FLOOR_NAME='`etcdctl get --prefix` of the same keys'
    FLOOR_CMD="sh -c 'ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$port get --prefix /bench/clusters/default/ >/dev/null && ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$port get --prefix /bench/nodes/default/ >/dev/null'"
    PUT_CMD="sh -c 'ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$port put /bench-floor/k v >/dev/null'"
    ;;
  *) die "unknown store $store in BENCH_STORES (sqlite, postgres, etcd)" ;;
  esac
  export GANTRY_STATE=$URL
  log "$store: gantry up of the 3-node cluster whose records are copied"
  "$GANTRY" up -f "$WORK/seed.yaml" >/dev/null 2>"$WORK/up.err" || {
    tail -n 20 "$WORK/up.err" >&2
    die "$store: gantry up failed"
  }
  "$EXAMPLES/state-seed" "$URL" default seed $((CLUSTERS - 1)) >&2
  listed=$("$GANTRY" ls -o json | jq 'length')
  [[ $listed == "$CLUSTERS" ]] || die "$store: gantry ls lists $listed clusters, not $CLUSTERS"

  log "$store: hyperfine, $RUNS runs each"
  cmds=("$GANTRY ls" "$GANTRY ls -o json")
  [[ -z $FLOOR_CMD ]] || cmds+=("$FLOOR_CMD")
  hyperfine -N -w 3 -r "$RUNS" --export-json "$WORK/ls-$store.json" "${cmds[@]}" >&2
  read -r LOCK_LINE < <("$EXAMPLES/state-lock" "$URL" "$LOCKS")
  lock_ms() { awk -v u="$(sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$LOCK_LINE")" 'BEGIN { printf "%.2f", u / 1000 }'; }
  j=$WORK/ls-$store.json
  printf '| %s | %s | %s | %s | %s | %s |\n' "$LABEL" "$(ms "$j" 0 median)" "$(ms "$j" 0 min)" \
    "$(ms "$j" 1 median)" "$(lock_ms median_us)" "$(lock_ms p90_us)" >>"$ROWS"
  [[ $store != sqlite ]] || LS_SQLITE=$(ms "$j" 0 median)
  [[ $store != postgres ]] || { LS_PG=$(ms "$j" 0 median); LOCK_PG=$(lock_ms median_us); }
  if [[ -n $FLOOR_CMD ]]; then
    floor=$(ms "$j" 2 median)
    printf '| %s | %s | %s ms | %s ms | %sx |\n' "$LABEL" "$FLOOR_NAME" "$floor" "$(ms "$j" 0 median)" \
      "$(awk -v a="$(ms "$j" 0 median)" -v b="$floor" 'BEGIN { printf "%.1f", a / b }')" >>"$FLOORS"
  fi
  if [[ $store == etcd ]]; then
    LS_ETCD=$(ms "$j" 0 median)
    LOCK_ETCD=$(lock_ms median_us)
    hyperfine -N -w 3 -r "$RUNS" --export-json "$WORK/put.json" "$PUT_CMD" >&2
    PUT_ETCD=$(ms "$WORK/put.json" 0 median)
  fi
  "$GANTRY" destroy seed --yes >/dev/null 2>&1 || die "$store: gantry destroy seed failed"
  stop_server
done
unset GANTRY_STATE

verdict() { awk -v v="$1" -v l="$2" 'BEGIN { if (v == "") print "not measured"; else if (v < l) printf "met (%s)", v; else printf "**NOT met** (%s)", v }'; }
TARGETS="\`ls\` under 50 ms on SQLite: $(verdict "$LS_SQLITE" 50)"
[[ -z ${LS_PG:-} ]] || TARGETS="$TARGETS; under 150 ms on PostgreSQL: $(verdict "$LS_PG" 150); a lock round trip under 10 ms on PostgreSQL: $(verdict "$LOCK_PG" 10)"
[[ -z ${LS_ETCD:-} ]] || TARGETS="$TARGETS; \`ls\` under 150 ms on etcd: $(verdict "$LS_ETCD" 150); a lock round trip on etcd within 3x one \`etcdctl put\` ($PUT_ETCD ms, a process start included): $(verdict "$LOCK_ETCD" "$(awk -v p="$PUT_ETCD" 'BEGIN { print 3 * p }')")"
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

| store | `ls` median | `ls` min | `ls -o json` median | lock round trip median | p90 |
| --- | ---: | ---: | ---: | ---: | ---: |
@ROWS@

Against each store's own client reading the same rows, in the same hyperfine run (a process
start and a connection included on both sides):

| store | floor | floor median | `gantry ls` median | ratio |
| --- | --- | ---: | ---: | ---: |
@FLOORS@

Targets: @TARGETS@.

- Date: @DATE@
- Machine: @NPROC@ CPUs; load average before measuring: @LOAD@
- gantry commit: @COMMIT@, @BUILD@
- Reproduce: `benches/state-stores.sh` (`BENCH_STORES`, `BENCH_CLUSTERS`, `BENCH_RUNS`, `BENCH_LOCKS`)
EOT
  )" CLUSTERS="$CLUSTERS" RUNS="$RUNS" LOCKS="$LOCKS" ROWS="$(cat "$ROWS")" \
    FLOORS="$(cat "$FLOORS")" TARGETS="$TARGETS" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
    NPROC="$(nproc)" LOAD="$LOAD_START" COMMIT="$COMMIT" BUILD="$BUILD_KIND"
)
echo
printf '%s\n' "$SECTION"
if [[ $OUT != - ]]; then
  printf '%s\n' "$SECTION" >"$WORK/section.md"
  write_section "$OUT" "$WORK/section.md"
  log "wrote $OUT"
fi
