#!/bin/sh
# Decides how {{ node.name }} enters the cluster, once: as a founding member of a new cluster,
# or (after a grow) as a new member of the running one. Idempotent: a node that has its
# cluster file or data directory is already in.
set -eu
cd "$HOME"
mkdir -p etcd
if [ -f etcd/etcd.cluster ] || [ -d etcd/data/member ]; then
  echo "{{ node.name }} is already a member"
  exit 0
fi
{% if members %}
# The cluster runs on {{ members | length }} member(s): announce this node, then start it with
# the configuration etcd hands back.
# etcd refuses new members until its leader has been connected to every member for a health
# interval ("unhealthy cluster"), e.g. right after the cluster formed: retry that for a while.
for attempt in $(seq 1 60); do
  if out=$({{ artifacts.etcdctl.path }} \
      --endpoints={% for m in members %}http://{{ m.address }}:{{ params.client_port }}{% if not loop.last %},{% endif %}{% endfor %} \
      member add {{ node.name }} --peer-urls=http://{{ node.address }}:{{ params.peer_port }} 2>&1); then
    break
  fi
  case "$out" in
    *"unhealthy cluster"*|*"not enough started members"*) sleep 1 ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
done
echo "$out"
echo "$out" | grep '^ETCD_INITIAL_CLUSTER' > etcd/etcd.cluster.tmp
mv etcd/etcd.cluster.tmp etcd/etcd.cluster
# Started here, not in the start step: the next node may only be announced once this one runs.
{% include "scripts/start.sh" %}
for i in $(seq 1 120); do
  if {{ artifacts.etcdctl.path }} --endpoints=http://{{ node.address }}:{{ params.client_port }} endpoint health >/dev/null 2>&1; then
    echo "{{ node.name }} joined"
    exit 0
  fi
  sleep 0.5
done
echo "{{ node.name }} did not become healthy after joining" >&2
tail -n 20 etcd/etcd.log >&2 || true
exit 1
{% else %}
cat > etcd/etcd.cluster.tmp <<EOT
ETCD_INITIAL_CLUSTER={% for n in nodes %}{{ n.name }}=http://{{ n.address }}:{{ params.peer_port }}{% if not loop.last %},{% endif %}{% endfor %}
ETCD_INITIAL_CLUSTER_STATE=new
EOT
mv etcd/etcd.cluster.tmp etcd/etcd.cluster
echo "{{ node.name }} will found a {{ nodes | length }}-member cluster"
{% endif %}
