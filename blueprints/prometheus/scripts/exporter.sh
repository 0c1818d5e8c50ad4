#!/bin/sh
# Starts node-exporter on {{ node.name }} unless it runs. Idempotent.
set -eu
cd "$HOME"
mkdir -p prometheus
if [ -f prometheus/exporter.pid ] && kill -0 "$(cat prometheus/exporter.pid)" 2>/dev/null; then
  echo "node-exporter already running"
  exit 0
fi
nohup {{ artifacts['node-exporter'].path }} \
  --web.listen-address={{ node.address }}:{{ params.exporter_port }} \
  >> prometheus/exporter.log 2>&1 < /dev/null &
echo $! > prometheus/exporter.pid
echo "node-exporter started on {{ node.address }}:{{ params.exporter_port }}"
