#!/usr/bin/env bash
# The quickstart: builds gantry and brings up a 3-node cluster on this machine (local provider:
# no cloud account, no Docker) running a real 3-member etcd cluster, then shows its health and
# how to use it. Safe to run again: `up` converges, and an up-to-date cluster is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh quickstart
echo "== building gantry" >&2
cargo build --locked -p gantry-cli
gantry="${CARGO_TARGET_DIR:-target}/debug/gantry"

"$gantry" up -f examples/etcd.yaml
echo
echo "== etcd health, asked on every node" >&2
"$gantry" run etcd -- 'etcdctl --endpoints=http://$GANTRY_NODE_ADDRESS:2379 endpoint health'
"$gantry" run etcd/member-1 -- 'etcdctl --endpoints=http://$GANTRY_NODE_ADDRESS:2379 member list -w table'
echo
cat <<EOT
A 3-member etcd cluster runs on 3 local nodes (each on its own 127.x address). Try:
  $gantry show etcd
  $gantry run etcd/member-2 -- 'etcdctl --endpoints=http://\$GANTRY_NODE_ADDRESS:2379 put hello world'
  $gantry ssh etcd/member-3
  ssh -F <($gantry ssh-config etcd) etcd-member-1
  $gantry destroy etcd
It expires in 12 hours: \`$gantry gc\` removes expired clusters.
EOT
