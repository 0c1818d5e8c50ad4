#!/bin/sh
# Starts Prometheus on {{ node.name }}, or restarts it when its config changed. Idempotent.
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
running() { ours prometheus/server.pid; }
want=$(cksum < prometheus/prometheus.yml)
if running; then
  if [ -f prometheus/started.cksum ] && [ "$(cat prometheus/started.cksum)" = "$want" ]; then
    echo "prometheus already running with this config"
    exit 0
  fi
  echo "config changed: restarting prometheus"
  kill "$(cat prometheus/server.pid)"
  for i in $(seq 1 100); do running || break; sleep 0.1; done
fi
nohup {{ artifacts.prometheus.path }} \
  --config.file=prometheus/prometheus.yml \
  --storage.tsdb.path=prometheus/data \
  --storage.tsdb.retention.time={{ params.retention }} \
  --web.listen-address={{ node.address }}:{{ params.port }} \
  >> prometheus/server.log 2>&1 < /dev/null &
echo $! > prometheus/server.pid
echo "$want" > prometheus/started.cksum
echo "prometheus started on {{ node.address }}:{{ params.port }}"
