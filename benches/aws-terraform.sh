#!/usr/bin/env bash
# AWS provisioning benchmark on moto: gantry vs Terraform (hashicorp/aws 5.100.0), same run.
#
#   benches/aws-terraform.sh
#
# What it does (see benches/README.md):
#   1. builds gantry in release (`cargo build --release -p gantry-cli`, honours CARGO_TARGET_DIR);
#   2. starts its own moto on a free loopback port (scripts/services.sh start moto, validation on);
#   3. prepares Terraform from the pre-installed filesystem mirror (no network): a terraformrc in
#      a temp dir pointed at by TF_CLI_CONFIG_FILE, benches/terraform/main.tf, `terraform init`;
#   4. for N in 3 20 100, BENCH_RUNS (3) times each, with moto reset (and warmed with one
#      untimed Describe call) before every measurement:
#        terraform apply -auto-approve  / terraform destroy -auto-approve   (N instances + SG + key)
#        gantry up -f SPEC              / gantry destroy CLUSTER --yes      (same, readiness: api)
#      and after every apply/up checks at moto (not through either tool) that exactly N instances
#      carry the cluster's tag, and after every destroy that none do;
#   5. prints a markdown table and writes (or replaces) the section
#      "## AWS provider on moto: gantry vs Terraform" in BENCHMARKS.md.
#
# Knobs (environment): BENCH_SIZES ("3 20 100"), BENCH_RUNS (3), BENCH_OUT (BENCHMARKS.md; "-" for
# none), BENCH_SKIP_BUILD=1, BENCH_GANTRY=PATH (that binary, no build), BENCH_SKIP_GANTRY=1
# (Terraform only; writes nothing to BENCHMARKS.md), BENCH_SKIP_TERRAFORM=1 (gantry only, no
# Terraform needed; writes nothing to BENCHMARKS.md: benches/check.sh runs it so), BENCH_AMI / BENCH_INSTANCE_TYPE (what
# Terraform launches; default: what gantry launched in an untimed 1-node warm-up, else al2023 /
# t3.micro).
# All traffic stays on 127.0.0.1: both tools are given moto's endpoint explicitly, dummy
# credentials, and no metadata lookups; neither ever connects to an instance.
set -euo pipefail

SIZES=${BENCH_SIZES:-3 20 100}
RUNS=${BENCH_RUNS:-3}
CLUSTER=awsbench
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/benches/lib.sh"
OUT=${BENCH_OUT:-$REPO/BENCHMARKS.md}
SKIP_GANTRY=${BENCH_SKIP_GANTRY:-0}
SKIP_TF=${BENCH_SKIP_TERRAFORM:-0}
[[ $SKIP_GANTRY == 1 && $SKIP_TF == 1 ]] && { echo "BENCH_SKIP_GANTRY and BENCH_SKIP_TERRAFORM: nothing to measure" >&2; exit 2; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
set -E
trap 'log "FAIL: line $LINENO: $BASH_COMMAND"' ERR

unset GANTRY_PROJECT GANTRY_OUTPUT GANTRY_CONCURRENCY GANTRY_LOG GANTRY_LOCK_TIMEOUT || true
# Never real AWS: no profile files, no metadata server, dummy credentials.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_SESSION_TOKEN AWS_PROFILE || true
export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

[[ $SKIP_TF == 1 ]] || have terraform || die "terraform is not on PATH (docs/testing.md: Terraform 1.11.4)"
have curl || die "curl is needed"

# --- 1. build -----------------------------------------------------------------------------
cd "$REPO"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BUILD_KIND='release build (`cargo build --release -p gantry-cli`)'
if [[ $SKIP_GANTRY != 1 ]]; then
  if [[ -n ${BENCH_GANTRY:-} ]]; then
    BUILD_KIND="binary given by BENCH_GANTRY=$BENCH_GANTRY"
    GANTRY=$(cd "$(dirname "$BENCH_GANTRY")" && pwd)/$(basename "$BENCH_GANTRY")
  else
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
      log "cargo build --release -p gantry-cli (target dir: $TARGET_DIR)"
      cargo build --release -p gantry-cli >&2 || die "cargo build --release -p gantry-cli failed"
    fi
    GANTRY=$(cd "$TARGET_DIR/release" && pwd)/gantry
  fi
  [[ -x $GANTRY ]] || die "no gantry binary at $GANTRY"
fi

# --- 2. moto and the scratch dir ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-awsbench.XXXXXX")
MOTO_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $MOTO_PID ]]; then
    "$REPO/scripts/services.sh" stop "$MOTO_PID" || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

read -r MOTO_PORT MOTO_PID MOTO_LOG < <(SERVICES_WATCH_PID=$$ "$REPO/scripts/services.sh" start moto) ||
  die "could not start moto"
[[ -n ${MOTO_PID:-} ]] || die "could not start moto"
ENDPOINT=http://127.0.0.1:$MOTO_PORT
log "moto on $ENDPOINT (pid $MOTO_PID, log $MOTO_LOG)"

moto_reset() {
  "$REPO/scripts/services.sh" reset "$MOTO_PORT" >/dev/null
  # moto builds its EC2 backend (and its ~1200 AMIs) lazily on the first call after a reset;
  # pay that outside the timings, for both tools alike.
  "$REPO/scripts/services.sh" count "$MOTO_PORT" instances gantry-cluster warm-up >/dev/null
}
count_at_moto() { "$REPO/scripts/services.sh" count "$MOTO_PORT" "$1" gantry-cluster "$2"; }
expect_count() { # RESOURCE CLUSTER WANT WHAT
  local got
  got=$(count_at_moto "$1" "$2")
  [[ $got == "$3" ]] || die "$4: moto has $got $1 tagged gantry-cluster=$2, wanted $3"
}
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'; }

# --- 3. Terraform --------------------------------------------------------------------------
if [[ $SKIP_TF != 1 ]]; then
# The pre-installed mirror (not some working directory's .terraform cache); BENCH_TF_MIRROR overrides.
MIRROR=${BENCH_TF_MIRROR:-$(find / -xdev -type d -name registry.terraform.io -not -path '*/.terraform/*' \
  -not -path '/proc/*' 2>/dev/null | head -n1 || true)}
[[ -n $MIRROR ]] || die "no Terraform provider mirror (a directory named registry.terraform.io) on this machine"
[[ $(basename "$MIRROR") == registry.terraform.io ]] && MIRROR=$(dirname "$MIRROR")
TF=$WORK/terraform
mkdir -p "$TF"
cat >"$WORK/terraformrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
EOF
export TF_CLI_CONFIG_FILE=$WORK/terraformrc
cp "$REPO/benches/terraform/main.tf" "$TF/main.tf"
ssh-keygen -q -t ed25519 -N '' -C awsbench -f "$WORK/tf_key" >/dev/null
log "terraform init (filesystem mirror $MIRROR)"
terraform -chdir="$TF" init -input=false -no-color >"$WORK/tf-init.log" 2>&1 ||
  { cat "$WORK/tf-init.log" >&2; die "terraform init failed"; }
TFV=$(terraform version | head -n1)
TFPV=$(terraform -chdir="$TF" version 2>/dev/null | awk '/provider registry.terraform.io\/hashicorp\/aws/ { print $NF }')
fi

# --- gantry spec --------------------------------------------------------------------------
GHOME=$WORK/gantry-home
mkdir -p "$GHOME"
spec() { # N -> path
  local f=$WORK/spec-$1.yaml
  cat >"$f" <<EOF
apiVersion: gantry/v1
name: $CLUSTER
provider:
  aws:
    region: us-east-1
    caller_cidr: 127.0.0.1/32
lifetime: 1h
readiness: api
pools:
  - name: db
    count: $1
EOF
  echo "$f"
}
gantry() { GANTRY_HOME=$GHOME AWS_ENDPOINT_URL=$ENDPOINT "$GANTRY" "$@"; }

AMI=${BENCH_AMI:-}
ITYPE=${BENCH_INSTANCE_TYPE:-}
if [[ $SKIP_GANTRY != 1 && $SKIP_TF != 1 && ( -z $AMI || -z $ITYPE ) ]]; then
  # One untimed 1-node gantry up tells what gantry launches (image and type), so that
  # Terraform launches the same.
  moto_reset
  gantry up -f "$(spec 1)" >"$WORK/warm.out" 2>"$WORK/warm.err" ||
    { cat "$WORK/warm.err" >&2; die "warm-up gantry up failed"; }
  read -r g_ami g_type < <(AWS_PORT=$MOTO_PORT python3 - <<'PY'
import os, boto3
e = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{os.environ['AWS_PORT']}", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")
for r in e.describe_instances(Filters=[{"Name": "tag:gantry-cluster", "Values": ["awsbench"]}])["Reservations"]:
    for i in r["Instances"]:
        print(i["ImageId"], i["InstanceType"])
        raise SystemExit
PY
  )
  AMI=${AMI:-$g_ami}
  ITYPE=${ITYPE:-$g_type}
  gantry destroy "$CLUSTER" --yes >/dev/null 2>"$WORK/warm.err" ||
    { cat "$WORK/warm.err" >&2; die "warm-up gantry destroy failed"; }
fi
AMI=${AMI:-ami-0e1e769742d1cfb49} # al2023-ami-2023.11.20260427.1-kernel-6.18-x86_64 in moto 5.2
ITYPE=${ITYPE:-t3.micro}
log "instances: $AMI $ITYPE"

tf() { # apply|destroy N
  terraform -chdir="$TF" "$1" -auto-approve -input=false -no-color \
    -var "endpoint=$ENDPOINT" -var "instance_count=$2" -var "cluster=tf$CLUSTER" \
    -var "ami=$AMI" -var "instance_type=$ITYPE" -var "public_key=$(cat "$WORK/tf_key.pub")" \
    >"$WORK/tf-$1.log" 2>&1 || { tail -n 40 "$WORK/tf-$1.log" >&2; die "terraform $1 ($2) failed"; }
}

# --- 4. measure ---------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
record() { echo "$3" >>"$WORK/$1-$2.times"; } # KEY N SECONDS
for n in $SIZES; do
  for run in $(seq "$RUNS"); do
    if [[ $SKIP_TF != 1 ]]; then
      moto_reset
      t0=$(now); tf apply "$n"; t1=$(now)
      expect_count instances "tf$CLUSTER" "$n" "terraform apply ($n)"
      t2=$(now); tf destroy "$n"; t3=$(now)
      expect_count instances "tf$CLUSTER" 0 "terraform destroy ($n)"
      a=$(secs "$t0" "$t1") d=$(secs "$t2" "$t3")
      record tf_apply "$n" "$a"; record tf_destroy "$n" "$d"
      record tf_total "$n" "$(awk -v a="$a" -v d="$d" 'BEGIN { printf "%.3f", a + d }')"
      log "N=$n run $run: terraform apply $a s, destroy $d s"
    fi
    if [[ $SKIP_GANTRY != 1 ]]; then
      moto_reset
      f=$(spec "$n")
      t0=$(now)
      gantry up -f "$f" >"$WORK/up.out" 2>"$WORK/up.err" || { tail -n 40 "$WORK/up.err" >&2; die "gantry up ($n) failed"; }
      t1=$(now)
      expect_count instances "$CLUSTER" "$n" "gantry up ($n)"
      t2=$(now)
      gantry destroy "$CLUSTER" --yes >"$WORK/destroy.out" 2>"$WORK/destroy.err" ||
        { tail -n 40 "$WORK/destroy.err" >&2; die "gantry destroy ($n) failed"; }
      t3=$(now)
      for r in instances security-groups key-pairs; do
        expect_count "$r" "$CLUSTER" 0 "gantry destroy ($n)"
      done
      a=$(secs "$t0" "$t1") d=$(secs "$t2" "$t3")
      record g_up "$n" "$a"; record g_destroy "$n" "$d"
      record g_total "$n" "$(awk -v a="$a" -v d="$d" 'BEGIN { printf "%.3f", a + d }')"
      log "N=$n run $run: gantry up $a s, destroy $d s"
    fi
  done
done

median() { sort -g "$WORK/$1-$2.times" | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); if (NR % 2) printf "%.2f", v[m]; else printf "%.2f", (v[m] + v[m + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "–" }'; }

TABLE=$WORK/table.md
{
  echo "| N | terraform apply (s) | terraform destroy (s) | terraform total (s) | gantry up (s) | gantry destroy (s) | gantry total (s) | ratio (terraform / gantry) |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for n in $SIZES; do
    if [[ $SKIP_GANTRY == 1 ]]; then
      echo "| $n | $(median tf_apply "$n") | $(median tf_destroy "$n") | $(median tf_total "$n") | – | – | – | – |"
    elif [[ $SKIP_TF == 1 ]]; then
      echo "| $n | – | – | – | $(median g_up "$n") | $(median g_destroy "$n") | $(median g_total "$n") | – |"
    else
      echo "| $n | $(median tf_apply "$n") | $(median tf_destroy "$n") | $(median tf_total "$n") | $(median g_up "$n") | $(median g_destroy "$n") | $(median g_total "$n") | $(ratio "$(median tf_total "$n")" "$(median g_total "$n")") |"
    fi
  done
} >"$TABLE"
echo
cat "$TABLE"

if [[ $SKIP_GANTRY == 1 ]]; then
  log "BENCH_SKIP_GANTRY=1: Terraform only; BENCHMARKS.md left alone"
  exit 0
fi

# Targets: >= 20x at N=20 (up + destroy), and sub-linear growth of gantry's total.
sizes=($SIZES)
TARGETS=""
if [[ $SKIP_TF == 1 ]]; then
  TARGETS=$'- Terraform was not run (BENCH_SKIP_TERRAFORM=1): no comparison.\n'
elif [[ " $SIZES " == *" 20 "* ]]; then
  TARGETS+=$(awk -v t="$(median tf_total 20)" -v g="$(median g_total 20)" 'BEGIN { r = t / g
    if (r >= 20) printf "- At least 20x faster than Terraform at 20 instances (up + destroy): **met** (%.1fx).\n", r
    else printf "- At least 20x faster than Terraform at 20 instances (up + destroy): **NOT met** (%.1fx).\n", r }')
  TARGETS+=$'\n'
fi
if ((${#sizes[@]} >= 2)); then
  lo=${sizes[0]} hi=${sizes[${#sizes[@]} - 1]}
  TARGETS+=$(awk -v lo="$lo" -v hi="$hi" -v a="$(median g_total "$lo")" -v b="$(median g_total "$hi")" 'BEGIN {
    g = b / a; c = hi / lo
    if (g < c) printf "- Sub-linear growth of gantry'"'"'s up + destroy: **met** (%d -> %d instances is %.1fx the count, %.2fx the time).", lo, hi, c, g
    else printf "- Sub-linear growth of gantry'"'"'s up + destroy: **NOT met** (%d -> %d instances is %.1fx the count, %.2fx the time).", lo, hi, c, g }')
fi

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$REPO" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]]; then
  COMMIT="$COMMIT (with uncommitted changes in the work tree)"
fi
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MOTOV=$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo "?")

IFS= read -r -d '' REPORT <<'EOF' || true
## AWS provider on moto: gantry vs Terraform

N EC2 instances (one pool, `@AMI@`, `@ITYPE@`, tagged) plus one security group (SSH from
127.0.0.1/32) and one imported key pair, created and then destroyed: `gantry up -f SPEC` (spec with
`readiness: api`: up returns once EC2 says `running`) and `gantry destroy @CLUSTER@ --yes` against
`terraform apply -auto-approve` and `terraform destroy -auto-approve` of
[benches/terraform/main.tf](benches/terraform/main.tf) (default parallelism 10), both against the
same moto server on 127.0.0.1, in the same run, moto reset and warmed with one untimed call before
every measurement. Median of @RUNS@ runs; total = median of the per-run apply + destroy sums. After
every apply/up the script counts at moto itself that exactly N instances carry the cluster's tag,
and after every destroy that no instance (nor, for gantry, security group or key pair) is left.
Ratio = Terraform total / gantry total (higher means gantry is faster).

@TABLE@

@TARGETS@

Terraform's time is mostly its own fixed waits (state refresh and instance-state polling with a
10 s minimum), not moto: moto answers each call in milliseconds.

- Date: @DATE@
- Machine: @CPUS@ CPUs, @CPU@; @KERNEL@; load average before measuring: @LOAD@
- gantry commit: @COMMIT@, @BUILD_KIND@
- Peers: @TFV@ with hashicorp/aws @TFPV@ (filesystem mirror); moto @MOTOV@ (`moto_server`, AMI,
  instance type and key pair validation on)
- Reproduce: `benches/aws-terraform.sh` (sizes: `BENCH_SIZES="@SIZES@"`)
EOF
SECTION=$WORK/section.md
render "$REPORT" AMI="$AMI" ITYPE="$ITYPE" CLUSTER="$CLUSTER" RUNS="$RUNS" TABLE="$(cat "$TABLE")" \
  TARGETS="$TARGETS" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" CPUS="$(nproc)" CPU="$CPU" \
  KERNEL="$(uname -sr)" LOAD="$LOAD_START" COMMIT="$COMMIT" BUILD_KIND="$BUILD_KIND" \
  TFV="${TFV:-Terraform (not run)}" TFPV="${TFPV:-–}" MOTOV="$MOTOV" SIZES="$SIZES" >"$SECTION"

echo
cat "$SECTION"

if [[ $SKIP_TF == 1 ]]; then
  log "BENCH_SKIP_TERRAFORM=1: gantry only; BENCHMARKS.md left alone"
elif [[ $OUT != - ]]; then
  write_section "$OUT" "$SECTION"
  log "wrote $OUT"
fi
