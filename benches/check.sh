#!/usr/bin/env bash
# Keeps the bench scripts working: a broken bench fails CI instead of the next person who
# measures. `scripts/test.sh` runs it.
#
#   benches/check.sh [NAME...]   # NAME: local-fanout, local-scale, docker-exec, aws-terraform, etcd-quickstart, state-stores
#
# 1. Statically, for every script under benches/ and scripts/: no unquoted heredoc holds a
#    backtick. In an unquoted heredoc a backtick pair runs a command: docker-exec.sh's report once
#    ran `run`, `up` and the bench itself, so it never ended. Reports are quoted heredocs filled
#    with `render` (benches/lib.sh).
# 2. Runs every bench once, small and without writing BENCHMARKS.md (BENCH_RUNS=1, BENCH_OUT=-,
#    2 nodes or instances, the debug binary), all at once, each in its own process group under a
#    time limit (BENCH_CHECK_TIMEOUT, default 300 s). A bench fails the check when it exits
#    non-zero, does not end in time, or leaves a process of its group running; whatever is left
#    is killed by its process group id. Peers that take minutes are left out (Terraform: the
#    AWS bench runs gantry only); the local fan-out bench needs parallel-ssh, ansible and jq
#    already installed (scripts/install-deps.sh), and is skipped with a reason without them
#    (a failure under CI=true).
#
# The binary: BENCH_GANTRY, else `$CARGO_TARGET_DIR/debug/gantry` (built by `cargo build -p
# gantry-cli` if missing). The Docker bench uses GANTRY_TEST_DOCKER_HOST when set (scripts/test.sh
# sets it), else starts its own dockerd. All traffic stays on 127.0.0.0/8.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
LIMIT=${BENCH_CHECK_TIMEOUT:-300}
log() { printf '[bench-check %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- 1. heredocs ------------------------------------------------------------------------------
bad=$(
  python3 - benches/*.sh scripts/*.sh <<'PY'
import re, sys
# `<<WORD`, `<<-WORD`, `<<'WORD'`, `<<"WORD"`, `<<\WORD`; not `<<<`.
start = re.compile(r"(?<!<)<<(?!<)-?\s*(\\?)(['\"]?)([A-Za-z_][A-Za-z_0-9]*)\2")
for path in sys.argv[1:]:
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = start.search(lines[i])
        if not m or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        quoted, word, opened = bool(m.group(1) or m.group(2)), m.group(3), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != word:
            body = lines[i].replace("\\\\", "").replace("\\`", "")
            if not quoted and "`" in body:
                print(f"{path}:{i + 1}: a backtick in the unquoted heredoc opened at line {opened} "
                      f"(<<{word}) runs a command; quote the heredoc (<<'{word}') and fill it with "
                      "`render` (benches/lib.sh)")
            i += 1
        i += 1
PY
)
if [[ -n $bad ]]; then
  echo "$bad" >&2
  exit 1
fi
log "heredocs: none unquoted with a backtick"

# --- 2. every bench, once and small -----------------------------------------------------------
if [[ -n ${BENCH_GANTRY:-} ]]; then
  GANTRY=$BENCH_GANTRY
else
  GANTRY=${CARGO_TARGET_DIR:-$REPO/target}/debug/gantry
  # The binary and the helpers benches/state-stores.sh runs (crates/gantry-cli/examples).
  [[ -x $GANTRY && -x $(dirname "$GANTRY")/examples/state-seed ]] ||
    cargo build --locked -p gantry-cli --bins --examples >&2
fi
GANTRY=$(cd "$(dirname "$GANTRY")" && pwd)/$(basename "$GANTRY")
[[ -x $GANTRY ]] || { log "no gantry binary at $GANTRY"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench-check.XXXXXX")
declare -A PIDS=()
cleanup() {
  local name
  for name in "${!PIDS[@]}"; do
    kill -TERM -- "-${PIDS[$name]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# NAME -> the environment it runs with (besides BENCH_GANTRY, BENCH_RUNS=1, BENCH_OUT=-).
declare -A ENVS=(
  [local-fanout]="BENCH_NODES=2 BENCH_NO_INSTALL=1"
  [local-scale]="BENCH_SIZES=2,4"
  [docker-exec]="BENCH_NODES=2${GANTRY_TEST_DOCKER_HOST:+ BENCH_DOCKER_HOST=$GANTRY_TEST_DOCKER_HOST}"
  [aws-terraform]="BENCH_SIZES=2 BENCH_SKIP_TERRAFORM=1"
  [etcd-quickstart]=""
  [state-stores]="BENCH_CLUSTERS=5 BENCH_RUNS=2 BENCH_LOCKS=10"
)
names=("$@")
((${#names[@]})) || names=(local-fanout local-scale docker-exec aws-terraform etcd-quickstart state-stores)
for f in benches/*.sh; do
  n=$(basename "$f" .sh)
  [[ $n == check || $n == lib || -v "ENVS[$n]" ]] ||
    { log "benches/$n.sh is not run by this check: add it to ENVS"; exit 1; }
done

skip() { # NAME REASON
  if [[ ${CI:-} == true ]]; then
    log "FAIL $1: $2 (CI=true)"
    return 1
  fi
  log "skipped $1: $2"
}

failed=0
started=$SECONDS
for name in "${names[@]}"; do
  [[ -v "ENVS[$name]" ]] || { log "unknown bench $name"; exit 2; }
  if [[ $name == local-fanout ]]; then
    missing=
    for t in parallel-ssh ansible jq; do command -v "$t" >/dev/null 2>&1 || missing+=" $t"; done
    if [[ -n $missing ]]; then
      skip "$name" "missing:$missing (scripts/install-deps.sh installs them)" || failed=1
      continue
    fi
  fi
  # setsid: the bench leads its own process group, which is what is checked and killed.
  # shellcheck disable=SC2086
  env BENCH_GANTRY="$GANTRY" BENCH_RUNS=1 BENCH_OUT=- ${ENVS[$name]} \
    setsid bash "benches/$name.sh" >"$WORK/$name.log" 2>&1 </dev/null &
  PIDS[$name]=$!
done

# group_alive PGID: whether any process of that group still runs.
group_alive() { pgrep -g "$1" >/dev/null 2>&1; }
for name in "${!PIDS[@]}"; do
  pid=${PIDS[$name]}
  rc=
  while ((SECONDS - started < LIMIT)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && rc=0 || rc=$?
      break
    fi
    sleep 1
  done
  if [[ -z $rc ]]; then
    log "FAIL $name: still running after ${LIMIT} s (BENCH_CHECK_TIMEOUT); stopping its process group $pid"
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    failed=1
  elif ((rc != 0)); then
    log "FAIL $name: exit code $rc"
    failed=1
  fi
  # What the bench started in its group must be gone (a watcher may take a second to notice).
  for _ in 1 2 3 4 5 6 7 8 9 10; do group_alive "$pid" || break; sleep 0.5; done
  if group_alive "$pid"; then
    log "FAIL $name: left running: $(pgrep -a -g "$pid" | tr '\n' ';')"
    kill -KILL -- "-$pid" 2>/dev/null || true
    failed=1
  fi
  unset "PIDS[$name]"
  if [[ $rc == 0 ]] && ! grep -q '^## ' "$WORK/$name.log"; then
    log "FAIL $name: printed no report section"
    failed=1
    rc=x
  fi
  if [[ $rc == 0 ]]; then
    log "ok $name"
  else
    tail -n 40 "$WORK/$name.log" | sed "s/^/  $name | /" >&2
  fi
done
log "done in $((SECONDS - started)) s"
exit "$failed"
