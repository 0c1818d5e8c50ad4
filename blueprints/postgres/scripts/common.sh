# Shared by the postgres scripts (included, not run on its own).
set -eu
cd "$HOME"
mkdir -p pg
PGDATA="$HOME/pg/data"
# Passwords come from this file (0600), never from a command line.
export PGPASSFILE="$HOME/pg/pgpass"
# PostgreSQL refuses to run as root. When the node's user is root (local nodes started by root),
# run it inside a user namespace where it is uid 1000; its files still belong to root outside.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    unshare --user --map-user=1000 --map-group=1000 "$@"
  else
    "$@"
  fi
}
