#!/bin/sh
# Clones the primary into a streaming replica on {{ node.name }} once (no-op on the primary).
{% include "scripts/common.sh" %}
{% if node.name == nodes[0].name %}
echo "{{ node.name }} is the primary"
exit 0
{% else %}
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  rm -rf "$PGDATA.tmp"
  as_pg {{ artifacts.pg_basebackup.path }} -h {{ nodes[0].address }} -p {{ params.port }} -U replicator \
    -D "$PGDATA.tmp" -X stream --checkpoint=fast
  touch "$PGDATA.tmp/standby.signal"
  # The clone carries the primary's listen address; this node listens on its own.
  sed -i "s/^listen_addresses = .*/listen_addresses = '{{ node.address }}'/" "$PGDATA.tmp/postgresql.conf"
  mv "$PGDATA.tmp" "$PGDATA"
  echo "replica of {{ nodes[0].name }} initialised"
fi
# Stream as the replication role, with its password from the 0600 password file (also on a
# replica made before passwords existed; start.sh reloads a running one).
sed -i '/^primary_conninfo/d' "$PGDATA/postgresql.auto.conf"
echo "primary_conninfo = 'host={{ nodes[0].address }} port={{ params.port }} user=replicator passfile=''$PGPASSFILE'' application_name={{ node.name }}'" \
  >> "$PGDATA/postgresql.auto.conf"
cp pg/pg_hba.conf "$PGDATA/pg_hba.conf"
{% endif %}
