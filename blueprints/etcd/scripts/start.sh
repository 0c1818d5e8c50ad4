#!/bin/sh
# Starts etcd on {{ node.name }} unless it runs. Idempotent.
set -eu
cd "$HOME/etcd"
if [ -f etcd.pid ] && kill -0 "$(cat etcd.pid)" 2>/dev/null; then
  echo "etcd already running (pid $(cat etcd.pid))"
  exit 0
fi
if [ ! -f etcd.cluster ]; then
  echo "etcd.cluster missing: the join step has not run on this node" >&2
  exit 1
fi
cd "$HOME"
set -a
. etcd/etcd.env
. etcd/etcd.cluster
set +a
nohup {{ artifacts.etcd.path }} >> etcd/etcd.log 2>&1 < /dev/null &
echo $! > etcd/etcd.pid
echo "etcd started (pid $!)"
