#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration against real
# OpenSSH and real local clusters). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== structure (scripts/check-structure.py)" >&2
scripts/check-structure.py

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== doc tests" >&2
# nextest does not run doc tests; run them first so the suite's summary closes the output.
cargo test --workspace --locked --doc --quiet

echo "== tests" >&2
# Servers started here, stopped by PID when this script exits.
started_pids=()
stop_started() {
  local pid
  for pid in "${started_pids[@]}"; do
    scripts/services.sh stop "$pid" >/dev/null 2>&1 || true
  done
}
trap stop_started EXIT
# The etcd state store's tests share one etcd for the whole run (each test under its own key
# prefix), unless GANTRY_TEST_ETCD_ENDPOINT names one already; without the variable each test
# process would start its own.
if [ -z "${GANTRY_TEST_ETCD_ENDPOINT:-}" ]; then
  etcd_info=$(SERVICES_WATCH_PID=$$ scripts/services.sh start etcd)
  read -r etcd_port etcd_pid _ <<<"$etcd_info"
  started_pids+=("$etcd_pid")
  export GANTRY_TEST_ETCD_ENDPOINT=127.0.0.1:$etcd_port
  echo "== etcd $etcd_pid at $GANTRY_TEST_ETCD_ENDPOINT" >&2
fi
# The Docker tests need an engine: a private dockerd (its data under a temp dir, stopped by PID
# when this script exits) with the test image, unless GANTRY_TEST_DOCKER_HOST names one already.
if [ -z "${GANTRY_TEST_DOCKER_HOST:-}" ]; then
  if docker_info=$(SERVICES_WATCH_PID=$$ scripts/services.sh start docker); then
    read -r docker_host docker_pid _ <<<"$docker_info"
    started_pids+=("$docker_pid")
    DOCKER_HOST=$docker_host scripts/build-test-image.sh >/dev/null
    export GANTRY_TEST_DOCKER_HOST=$docker_host
    echo "== dockerd $docker_pid at $docker_host (gantry/node:test built)" >&2
  else
    echo "== no dockerd could be started: the Docker tests skip (and fail under CI=true)" >&2
  fi
fi
# Every bench script, once and small (BENCH_RUNS=1, 2 nodes, no Terraform; benches/check.sh), so
# a broken bench fails here rather than when someone measures. It needs the binary the tests
# build anyway. A failure is reported after the tests, which run regardless.
echo "== bench scripts (benches/check.sh)" >&2
cargo build --locked -p gantry-cli --quiet
bench_rc=0
benches/check.sh || bench_rc=$?
# A failing assertion's message, not a backtrace, is what the kept tail of a CI log should show
# (.config/nextest.toml repeats failing output after the summary). GANTRY_TEST_BACKTRACE=1 keeps them.
export RUST_BACKTRACE=${GANTRY_TEST_BACKTRACE:-0}
tests_rc=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || tests_rc=$?
else
  cargo test --workspace --locked --no-fail-fast || tests_rc=$?
fi
if ((bench_rc != 0)); then
  echo "== benches/check.sh failed (exit code $bench_rc): see its output before the tests" >&2
  ((tests_rc != 0)) || tests_rc=$bench_rc
fi
exit "$tests_rc"
