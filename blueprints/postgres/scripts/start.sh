#!/bin/sh
# Starts PostgreSQL on {{ node.name }} unless it runs (then reloads its configuration). Idempotent.
{% include "scripts/common.sh" %}
# Whether PIDFILE names a live process of this node: a PID alone may have been reused by an
# unrelated process since (nodes carry GANTRY_NODE_UID where gantry can mark them).
ours() {
  [ -f "$1" ] || return 1
  pid=$(head -n 1 "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -n "${GANTRY_NODE_UID:-}" ] || return 0
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "GANTRY_NODE_UID=$GANTRY_NODE_UID"
}
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  echo "no data directory yet"
  exit 0
fi
if ours "$PGDATA/postmaster.pid" && as_pg {{ artifacts.pg_ctl.path }} -D "$PGDATA" status >/dev/null 2>&1; then
  as_pg {{ artifacts.pg_ctl.path }} -D "$PGDATA" reload >/dev/null
  echo "postgres already running (configuration reloaded)"
  exit 0
fi
as_pg {{ artifacts.pg_ctl.path }} -D "$PGDATA" -l "$HOME/pg/postgres.log" -w -t 50 start
