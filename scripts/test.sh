#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration against real
# OpenSSH and real local clusters). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== doc tests" >&2
# nextest does not run doc tests; run them first so the suite's summary closes the output.
cargo test --workspace --locked --doc --quiet

echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
