#!/bin/sh
# Starts PostgreSQL on {{ node.name }} unless it runs. Idempotent.
{% include "scripts/common.sh" %}
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  echo "no data directory yet"
  exit 0
fi
if as_pg {{ artifacts.pg_ctl.path }} -D "$PGDATA" status >/dev/null 2>&1; then
  echo "postgres already running"
  exit 0
fi
as_pg {{ artifacts.pg_ctl.path }} -D "$PGDATA" -l "$HOME/pg/postgres.log" -w -t 50 start
