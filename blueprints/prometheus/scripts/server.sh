#!/bin/sh
# Starts Prometheus on {{ node.name }}, or restarts it when its config changed. Idempotent.
set -eu
cd "$HOME"
running() { [ -f prometheus/server.pid ] && kill -0 "$(cat prometheus/server.pid)" 2>/dev/null; }
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
