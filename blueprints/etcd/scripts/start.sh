#!/bin/sh
# Starts etcd on {{ node.name }} unless it runs. Idempotent.
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
cd "$HOME/etcd"
if ours etcd.pid; then
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
