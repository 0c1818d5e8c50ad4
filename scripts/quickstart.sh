#!/usr/bin/env bash
# Builds gantry and brings up the example 3-node cluster on this machine (local provider: no
# cloud account, no Docker), then shows it working. Safe to run again: `up` converges.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== building gantry" >&2
cargo build --locked -p gantry-cli
target="${CARGO_TARGET_DIR:-target}"
gantry="$target/debug/gantry"

"$gantry" up -f examples/local.yaml
echo
echo "== gantry run demo -- hostname" >&2
"$gantry" run demo -- hostname
echo
cat <<EOT
The cluster is up. Try:
  $gantry show demo
  $gantry ssh demo/1
  ssh -F <($gantry ssh-config demo) demo-db-2
  $gantry destroy demo
EOT
