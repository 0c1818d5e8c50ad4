#!/bin/sh
# Starts redis on {{ node.name }}, or restarts it when its config changed since it started.
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
running() { ours redis/redis.pid; }
want=$(cksum < redis/redis.conf)
if running; then
  if [ -f redis/started.cksum ] && [ "$(cat redis/started.cksum)" = "$want" ]; then
    echo "redis already running with this config"
    exit 0
  fi
  echo "config changed: restarting redis"
  kill "$(cat redis/redis.pid)"
  for i in $(seq 1 100); do running || break; sleep 0.1; done
fi
{{ artifacts['redis-server'].path }} "$HOME/redis/redis.conf" \
  --dir "$HOME/redis" --pidfile "$HOME/redis/redis.pid" --logfile "$HOME/redis/redis.log"
echo "$want" > redis/started.cksum
echo "redis started on {{ node.address }}:{{ params.port }}"
