#!/bin/sh
# Creates the primary's data directory on {{ node.name }} once.
{% include "scripts/common.sh" %}
if [ -f "$PGDATA/PG_VERSION" ]; then
  echo "primary already initialised"
  exit 0
fi
rm -rf "$PGDATA.tmp"
# The superuser's password reaches initdb in a 0600 file, removed right after.
(umask 077 && cat > pg/initdb.pw) <<'EOT'
{{ params.password }}
EOT
as_pg {{ artifacts.initdb.path }} -D "$PGDATA.tmp" -U postgres --auth=scram-sha-256 --pwfile="$HOME/pg/initdb.pw" \
  --encoding=UTF8 --locale=C.UTF-8 >/dev/null
rm -f pg/initdb.pw
cat >> "$PGDATA.tmp/postgresql.conf" <<EOT
# Added by gantry.
listen_addresses = '{{ node.address }}'
port = {{ params.port }}
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
hot_standby = on
EOT
cp pg/pg_hba.conf "$PGDATA.tmp/pg_hba.conf"
mv "$PGDATA.tmp" "$PGDATA"
echo "primary initialised"
