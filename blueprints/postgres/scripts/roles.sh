#!/bin/sh
# On the primary {{ node.name }}: the superuser's password, the replication role, the database,
# then password authentication for every connection. Idempotent.
{% include "scripts/common.sh" %}
psql() {
  {{ artifacts.psql.path }} -h {{ node.address }} -p {{ params.port }} -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}
# The statements carry passwords: they go to psql's standard input, not its command line.
psql <<'EOT'
ALTER ROLE postgres PASSWORD '{{ params.password }}';
SELECT 'CREATE ROLE replicator WITH REPLICATION LOGIN'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'replicator') \gexec
ALTER ROLE replicator PASSWORD '{{ params.replication_password }}';
SELECT 'CREATE DATABASE {{ params.database }}'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{{ params.database }}') \gexec
EOT
# Only now, with the passwords set, does the primary ask for them.
if ! cmp -s pg/pg_hba.conf "$PGDATA/pg_hba.conf"; then
  cp pg/pg_hba.conf "$PGDATA/pg_hba.conf"
  psql -c 'SELECT pg_reload_conf()' >/dev/null
  echo "password authentication on"
fi
echo "roles and database ready"
