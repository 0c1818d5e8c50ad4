#!/bin/sh
# Starts node-exporter on {{ node.name }} unless it runs. Idempotent.
set -eu
# Whether PIDFILE names a live process of this node: a PID alone may have been reused by an
# unrelated process since (nodes carry GANTRY_NODE_UID where gantry can mark them).
ours() {
  [ -f "$1" ] || return 1
  pid=$(head -n 1 "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -n "${GANTRY_NODE_UID:-}" ] || return 0
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "GANTRY_NODE_UID=$GANTRY_NODE_UID"
}
cd "$HOME"
mkdir -p prometheus
if ours prometheus/exporter.pid; then
  echo "node-exporter already running"
  exit 0
fi
nohup {{ artifacts['node-exporter'].path }} \
  --web.listen-address={{ node.address }}:{{ params.exporter_port }} \
  >> prometheus/exporter.log 2>&1 < /dev/null &
echo $! > prometheus/exporter.pid
echo "node-exporter started on {{ node.address }}:{{ params.exporter_port }}"
