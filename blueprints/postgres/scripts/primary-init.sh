#!/bin/sh
# Creates the primary's data directory on {{ node.name }} once.
{% include "scripts/common.sh" %}
if [ -f "$PGDATA/PG_VERSION" ]; then
  echo "primary already initialised"
  exit 0
fi
rm -rf "$PGDATA.tmp"
as_pg {{ artifacts.initdb.path }} -D "$PGDATA.tmp" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$PGDATA.tmp/postgresql.conf" <<EOT
# Added by gantry.
listen_addresses = '{{ node.address }}'
port = {{ params.port }}
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
hot_standby = on
EOT
cat > "$PGDATA.tmp/pg_hba.conf" <<EOT
# The cluster's nodes only (trust: a test cluster on private addresses).
{% for n in nodes %}host all all {{ n.address }}/32 trust
host replication all {{ n.address }}/32 trust
{% endfor %}{% if node.address is startingwith("127.") %}# Local nodes: connections between loopback addresses come from 127.0.0.1.
host all all 127.0.0.0/8 trust
host replication all 127.0.0.0/8 trust
{% endif %}
EOT
mv "$PGDATA.tmp" "$PGDATA"
echo "primary initialised"
