#!/bin/sh
# Starts redis on {{ node.name }}, or restarts it when its config changed since it started.
set -eu
cd "$HOME"
running() { [ -f redis/redis.pid ] && kill -0 "$(cat redis/redis.pid)" 2>/dev/null; }
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
