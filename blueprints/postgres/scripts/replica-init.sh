#!/bin/sh
# Clones the primary into a streaming replica on {{ node.name }} once (no-op on the primary).
{% include "scripts/common.sh" %}
{% if node.name == nodes[0].name %}
echo "{{ node.name }} is the primary"
exit 0
{% else %}
if [ -f "$PGDATA/PG_VERSION" ]; then
  echo "replica already initialised"
  exit 0
fi
rm -rf "$PGDATA.tmp"
as_pg {{ artifacts.pg_basebackup.path }} -h {{ nodes[0].address }} -p {{ params.port }} -U postgres \
  -D "$PGDATA.tmp" -R -X stream --checkpoint=fast
# The clone carries the primary's listen address; this node listens on its own.
sed -i "s/^listen_addresses = .*/listen_addresses = '{{ node.address }}'/" "$PGDATA.tmp/postgresql.conf"
mv "$PGDATA.tmp" "$PGDATA"
echo "replica of {{ nodes[0].name }} initialised"
{% endif %}
