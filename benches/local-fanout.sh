#!/usr/bin/env bash
# Fan-out benchmark for the local provider: gantry vs parallel-ssh vs ansible on N local nodes.
#
#   benches/local-fanout.sh
#
# What it does (see benches/README.md):
#   1. builds gantry in release (`cargo build --release -p gantry-cli`, honours CARGO_TARGET_DIR)
#      and installs the missing peers: parallel-ssh (Debian `pssh`), ansible (`ansible-core` from
#      PyPI), hyperfine (Debian; without it a bash loop with `date +%s%N` is used);
#   2. in a temporary GANTRY_HOME, times `gantry up` of a 50-node local cluster until every node
#      answers SSH (up waits for SSH readiness by default), destroying the cluster before each run;
#   3. with the cluster up, times `true` on all nodes with `gantry run`, `parallel-ssh` and
#      `ansible`, after one verified warm-up run each (every tool must succeed on every node);
#   4. destroys the cluster, checks that nothing is left, removes the temporary directory;
#   5. prints a markdown table and writes/replaces the section
#      "## Local provider: fan-out on N nodes" in BENCHMARKS.md.
#
# Knobs (environment): BENCH_NODES (50), BENCH_RUNS (5), BENCH_OUT (BENCHMARKS.md at the repo
# root; "-" for none), BENCH_SKIP_BUILD=1 (use the existing release binary), BENCH_GANTRY=PATH
# (use that binary, no build; e.g. a debug build for comparison), BENCH_NO_INSTALL=1.
# All traffic stays on 127.0.0.0/8: local nodes listen on their own 127.x.y.z address.
set -euo pipefail

NODES=${BENCH_NODES:-50}
RUNS=${BENCH_RUNS:-5}
CLUSTER=bench
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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

# gantry's own environment must not change what is measured.
unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_CONCURRENCY GANTRY_LOG GANTRY_LOCK_TIMEOUT || true

# --- 1. build (started first: it is the slow part) and peers ---------------------------------
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [[ -z ${BENCH_GANTRY:-} && ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release -p gantry-cli (target dir: $TARGET_DIR)"
  cargo build --release -p gantry-cli >&2 &
  BUILD_PID=$!
fi

SUDO=
[[ $(id -u) == 0 ]] || SUDO=sudo
APT_UPDATED=0
apt_install() {
  if ((!APT_UPDATED)); then
    $SUDO apt-get update -qq >&2
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
if [[ ${BENCH_NO_INSTALL:-0} != 1 ]]; then
  have parallel-ssh || { log "installing pssh (parallel-ssh)"; apt_install pssh; }
  have ansible || { log "installing ansible-core"; python3 -m pip install -q ansible-core >&2; hash -r; }
  have hyperfine || { log "installing hyperfine"; apt_install hyperfine || log "no hyperfine: using a bash loop"; }
fi
have parallel-ssh || die "parallel-ssh not found (Debian package pssh)"
have ansible || die "ansible not found (pip install ansible-core)"
have jq || { [[ ${BENCH_NO_INSTALL:-0} == 1 ]] || apt_install jq; }
have jq || die "jq not found"

if [[ -n ${BUILD_PID:-} ]]; then
  wait "$BUILD_PID" || die "cargo build --release -p gantry-cli failed"
fi
BUILD_KIND='release build (`cargo build --release -p gantry-cli`)'
if [[ -n ${BENCH_GANTRY:-} ]]; then
  BUILD_KIND="binary given by BENCH_GANTRY=$BENCH_GANTRY"
  GANTRY=$(cd "$(dirname "$BENCH_GANTRY")" && pwd)/$(basename "$BENCH_GANTRY")
else
  GANTRY=$(cd "$TARGET_DIR/release" && pwd)/gantry
fi
[[ -x $GANTRY ]] || die "$GANTRY not found"

# --- temporary home and cleanup ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-bench.XXXXXX")
export GANTRY_HOME=$WORK/home
cluster_exists() {
  "$GANTRY" ls --output json | jq -e --arg c "$CLUSTER" 'any(.[]; .name == $c)' >/dev/null
}
agents_left() { pgrep -f -- "--node-dir $GANTRY_HOME/" || true; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -d $GANTRY_HOME ]] && cluster_exists 2>/dev/null; then
    log "cleanup: destroying $CLUSTER"
    "$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>&1 || log "cleanup: destroy failed"
  fi
  local left
  left=$(agents_left)
  if [[ -n $left ]]; then
    log "cleanup: agents of this run still alive (pids: $(echo $left)); keeping $WORK"
    rc=1
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SPEC=$WORK/spec.yaml
cat >"$SPEC" <<EOF
apiVersion: gantry/v1
name: $CLUSTER
provider: local
pools:
  - name: n
    count: $NODES
EOF

# --- measurement helpers -----------------------------------------------------------------------
# measure KEY CMD [PREPARE]: RUNS timed runs of CMD (a shell command; exit code 0 required),
# PREPARE (untimed) before each. Writes one time in seconds per line to $WORK/KEY.times.
measure() {
  local key=$1 cmd=$2 prepare=${3:-}
  log "measuring $key: $cmd ($RUNS runs)"
  if have hyperfine; then
    local args=(--runs "$RUNS" --style basic --export-json "$WORK/$key.json")
    [[ -z $prepare ]] || args+=(--prepare "$prepare")
    hyperfine "${args[@]}" "$cmd" >&2 || die "$key: a timed run failed"
    jq -r '.results[0].times[]' "$WORK/$key.json" >"$WORK/$key.times"
  else
    : >"$WORK/$key.times"
    local i t0 t1
    for ((i = 0; i < RUNS; i++)); do
      [[ -z $prepare ]] || bash -c "$prepare" >/dev/null 2>&1 || die "$key: prepare failed"
      t0=$(date +%s%N)
      bash -c "$cmd" >/dev/null 2>&1 || die "$key: a timed run failed"
      t1=$(date +%s%N)
      awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", (b - a) / 1e9 }' >>"$WORK/$key.times"
    done
  fi
}
# stats KEY -> "median min max"
stats() {
  sort -g "$WORK/$1.times" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }'
}
q() { printf '%q' "$1"; }

# --- 2. time to up -----------------------------------------------------------------------------
G=$(q "$GANTRY")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg) # before anything is measured (ansible's forks raise it)
UP="$G up -f $(q "$SPEC")"
log "warm-up: $UP"
$UP >"$WORK/up.out" 2>"$WORK/up.err" || { cat "$WORK/up.err" >&2; die "gantry up failed"; }
# Each timed run starts from no cluster: the warm-up's (or the previous run's) cluster is destroyed
# before it, untimed; the last run leaves the cluster up for the fan-out measurements.
measure up "$UP" "$G destroy $CLUSTER --yes"

# Every node must be running and have an SSH endpoint.
"$GANTRY" show "$CLUSTER" --output json >"$WORK/show.json"
jq -r '.nodes[] | select(.state == "running" and .ssh != null) | .name' "$WORK/show.json" >"$WORK/hosts"
[[ $(wc -l <"$WORK/hosts") == "$NODES" ]] || die "expected $NODES running nodes, got $(wc -l <"$WORK/hosts")"

# --- 3. fan-out: client configs ------------------------------------------------------------------
KEY=$GANTRY_HOME/projects/default/id_ed25519
KNOWN=$GANTRY_HOME/projects/default/known_hosts
[[ -f $KEY && -f $KNOWN ]] || die "project key or known_hosts missing"
[[ $(grep -c ' ssh-ed25519 ' "$KNOWN") -ge $NODES ]] || die "known_hosts does not pin every node"
"$GANTRY" ssh-config "$CLUSTER" >"$WORK/ssh_config"
printf 'Host *\n  BatchMode yes\n' >>"$WORK/ssh_config"
# Ansible inventory: same endpoint, key and pinned host key (by alias) as the ssh-config.
{
  echo '[all]'
  jq -r --arg key "$KEY" --arg kh "$KNOWN" '.nodes[] | select(.state == "running") |
    "\(.name) ansible_host=\(.ssh.host) ansible_port=\(.ssh.port) ansible_user=\(.ssh.user) " +
    "ansible_ssh_private_key_file=\($key) " +
    "ansible_ssh_common_args=\"-o UserKnownHostsFile=\($kh) -o HostKeyAlias=\(.name) -o IdentitiesOnly=yes -o CheckHostIP=no -o BatchMode=yes\""' \
    "$WORK/show.json"
} >"$WORK/inventory.ini"

export ANSIBLE_HOST_KEY_CHECKING=True            # host keys are pinned by `gantry up`
export ANSIBLE_SSH_ARGS="-o ControlMaster=no"    # no ControlPersist: every run pays its handshakes
export ANSIBLE_PYTHON_INTERPRETER=auto_silent
export ANSIBLE_LOCAL_TEMP=$WORK/ansible-local
export ANSIBLE_NOCOLOR=1

RUN_GANTRY="$G run $CLUSTER --concurrency $NODES -- true"
RUN_PSSH="parallel-ssh -h $(q "$WORK/hosts") -p $NODES -x $(q "-F $WORK/ssh_config") -i true"
RUN_ANSIBLE="ansible all -i $(q "$WORK/inventory.ini") -m command -a true --forks $NODES -o"

# Warm-up once each, checking that every node really ran the command.
log "warm-up: $RUN_GANTRY"
bash -c "$RUN_GANTRY" >"$WORK/gantry.out" 2>"$WORK/gantry.err" ||
  { cat "$WORK/gantry.err" >&2; die "gantry run failed"; }
grep -qx "$NODES/$NODES ok" "$WORK/gantry.err" || { cat "$WORK/gantry.err" >&2; die "gantry run: not $NODES/$NODES ok"; }

log "warm-up: $RUN_PSSH"
bash -c "$RUN_PSSH" >"$WORK/pssh.out" 2>&1 || { cat "$WORK/pssh.out" >&2; die "parallel-ssh failed"; }
[[ $(grep -c '\[SUCCESS\]' "$WORK/pssh.out") == "$NODES" ]] ||
  { cat "$WORK/pssh.out" >&2; die "parallel-ssh: not $NODES successes"; }

log "warm-up: $RUN_ANSIBLE"
bash -c "$RUN_ANSIBLE" >"$WORK/ansible.out" 2>&1 || { cat "$WORK/ansible.out" >&2; die "ansible failed"; }
[[ $(grep -c '| CHANGED | rc=0 ' "$WORK/ansible.out") == "$NODES" ]] ||
  { cat "$WORK/ansible.out" >&2; die "ansible: not $NODES successes"; }

measure gantry "$RUN_GANTRY"
measure pssh "$RUN_PSSH"
measure ansible "$RUN_ANSIBLE"

# --- 4. destroy and check nothing is left --------------------------------------------------------
log "destroying $CLUSTER"
"$GANTRY" destroy "$CLUSTER" --yes >/dev/null 2>"$WORK/destroy.err" ||
  { cat "$WORK/destroy.err" >&2; die "destroy failed"; }
[[ $("$GANTRY" ls --output json | jq -c .) == "[]" ]] || die "gantry ls is not [] after destroy"
sleep 0.5
[[ -z $(agents_left) ]] || die "agents still running after destroy: $(echo $(agents_left))"
[[ -z $(ls -A "$GANTRY_HOME/local/default" 2>/dev/null) ]] ||
  die "node directories left in $GANTRY_HOME/local/default"

# --- 5. report ---------------------------------------------------------------------------------
read -r G_MED G_MIN G_MAX < <(stats gantry)
read -r P_MED P_MIN P_MAX < <(stats pssh)
read -r A_MED A_MIN A_MAX < <(stats ansible)
read -r U_MED U_MIN U_MAX < <(stats up)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }
verdict() { # verdict PEER_MEDIAN TARGET
  awk -v p="$1" -v g="$G_MED" -v t="$2" 'BEGIN { r = p / g
    if (r >= t) printf "met (%.1fx >= %.1fx)", r, t; else printf "**NOT met** (%.1fx < %.1fx)", r, t }'
}

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Uncommitted changes to the product (not to the benchmark itself) are part of what was measured.
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!benches' ':!BENCHMARKS.md' 2>/dev/null) ]]; then
  COMMIT="$COMMIT (with uncommitted changes in the work tree)"
fi
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
TIMER=$(have hyperfine && hyperfine --version || echo "bash loop, date +%s%N")
SSHV=$(ssh -V 2>&1)
ANSV=$(ansible --version 2>/dev/null | awk "NR == 1")
PSSHV="parallel-ssh $(parallel-ssh --version 2>&1)"

IFS= read -r -d '' REPORT <<'EOF' || true
## Local provider: fan-out on @NODES@ nodes

A trivial command (`true`) on all @NODES@ nodes of a local cluster, each node's agent serving SSH on
its own 127.x.y.z address. Median, min and max of @RUNS@ runs after one verified warm-up; every run
exits 0 and the warm-up checks that all @NODES@ nodes ran the command. Ratio = tool median / gantry
median (higher means gantry is faster).

| tool | median (s) | min | max | ratio vs gantry |
| --- | ---: | ---: | ---: | ---: |
| `gantry run @CLUSTER@ --concurrency @NODES@ -- true` | @G_MED@ | @G_MIN@ | @G_MAX@ | 1.0x |
| `parallel-ssh -p @NODES@ -x "-F SSHCFG" -i true` | @P_MED@ | @P_MIN@ | @P_MAX@ | @P_RATIO@ |
| `ansible all -m command -a true --forks @NODES@` | @A_MED@ | @A_MIN@ | @A_MAX@ | @A_RATIO@ |
| time to `gantry up` @NODES@ nodes until SSH answers (destroyed before each run) | @U_MED@ | @U_MIN@ | @U_MAX@ | – |

Targets: gantry ≥ 1.5x faster than parallel-ssh: @P_VERDICT@. gantry ≥ 5x faster than
ansible: @A_VERDICT@.

- Date: @DATE@
- Machine: @CPUS@ CPUs, @CPU@; @KERNEL@; load average before measuring: @LOAD@
- gantry commit: @COMMIT@, @BUILD_KIND@
- Peers: @PSSHV@ (BatchMode=yes, config from `gantry ssh-config`); @ANSV@
  (ControlMaster=no so no connection is reused between runs, host key checking on against the
  pinned known_hosts, interpreter discovery auto_silent, default settings otherwise); @SSHV@
- Timer: @TIMER@
- Reproduce: `benches/local-fanout.sh`
EOF
SECTION=$WORK/section.md
render "$REPORT" NODES="$NODES" RUNS="$RUNS" CLUSTER="$CLUSTER" \
  G_MED="$G_MED" G_MIN="$G_MIN" G_MAX="$G_MAX" \
  P_MED="$P_MED" P_MIN="$P_MIN" P_MAX="$P_MAX" P_RATIO="$(ratio "$P_MED" "$G_MED")" \
  A_MED="$A_MED" A_MIN="$A_MIN" A_MAX="$A_MAX" A_RATIO="$(ratio "$A_MED" "$G_MED")" \
  U_MED="$U_MED" U_MIN="$U_MIN" U_MAX="$U_MAX" \
  P_VERDICT="$(verdict "$P_MED" 1.5)" A_VERDICT="$(verdict "$A_MED" 5)" \
  DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" CPUS="$(nproc)" CPU="$CPU" KERNEL="$(uname -sr)" \
  LOAD="$LOAD_START" COMMIT="$COMMIT" BUILD_KIND="$BUILD_KIND" PSSHV="$PSSHV" ANSV="$ANSV" \
  SSHV="$SSHV" TIMER="$TIMER" >"$SECTION"

echo
cat "$SECTION"

if [[ $OUT != - ]]; then
  write_section "$OUT" "$SECTION"
  log "wrote $OUT"
fi
