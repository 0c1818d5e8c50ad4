#!/usr/bin/env bash
# Builds the Docker image gantry's Docker tests and examples/docker.yaml use, locally, from this
# machine's own packages: no registry is contacted (none can be reached here) and nothing is
# downloaded.
#
#   scripts/build-test-image.sh [IMAGE]        # default gantry/node:test; uses DOCKER_HOST
#
# The image is `FROM scratch` with:
#   - busybox-static as /bin/sh and every applet (ls, cat, ps, kill, sleep, tar, ...), plus a
#     two-line `nohup` when busybox has none (Debian's does not);
#   - bash, etcd and etcdctl with the shared libraries ldd says they need (the etcd blueprint);
#   - /etc/passwd (root), /etc/group, /etc/hosts written by Docker, /tmp, /root;
#   - CMD: busybox's `sleep` forever, so a node stays up until it is stopped (gantry runs
#     everything else through the exec API).
# Rebuilding is cheap (~2 s) and idempotent: the same inputs give the same layers.
set -euo pipefail

IMAGE=${1:-gantry/node:test}
die() {
  echo "build-test-image: $*" >&2
  exit 1
}
command -v docker >/dev/null 2>&1 || die "the docker client is missing (apt-get install docker.io)"
BUSYBOX=$(command -v busybox || true)
[[ -n $BUSYBOX ]] || die "busybox is missing (apt-get install busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
  ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic executable' ||
  die "$BUSYBOX is not static (apt-get install busybox-static)"

CTX=$(mktemp -d "${TMPDIR:-/tmp}/gantry-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
ROOT=$CTX/root
mkdir -p "$ROOT"/{bin,usr/bin,etc,tmp,root,var/tmp}
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ $applet == busybox ]] && continue
  ln -sf busybox "$ROOT/bin/$applet"
done

# A binary and every library it loads, at the same paths as on this machine.
copy_with_libs() {
  local bin=$1 dest=$2 lib
  mkdir -p "$ROOT/$(dirname "$dest")"
  cp -L "$bin" "$ROOT/$dest"
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
    [[ -e $ROOT$lib ]] && continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
}
# Debian's busybox-static has no `nohup` applet; the blueprints' start scripts use it.
if [[ ! -e $ROOT/bin/nohup ]]; then
  printf '#!/bin/sh\n# nohup for images whose busybox lacks it: ignore SIGHUP, then run the command.\ntrap "" HUP\nexec "$@"\n' >"$ROOT/bin/nohup"
  chmod 755 "$ROOT/bin/nohup"
fi
copy_with_libs /bin/bash /bin/bash
for tool in etcd etcdctl; do
  if p=$(command -v "$tool"); then
    copy_with_libs "$p" "/usr/bin/$tool"
  else
    echo "build-test-image: $tool not installed; the image has no $tool (apt-get install etcd-server etcd-client)" >&2
  fi
done
# x86_64 binaries look for the loader under /lib64 (a symlink on Debian).
if [[ -e /lib64/ld-linux-x86-64.so.2 && ! -e $ROOT/lib64/ld-linux-x86-64.so.2 ]]; then
  mkdir -p "$ROOT/lib64"
  cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"
fi
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
# Same mtimes on every build, so the layer is reused when nothing changed.
find "$ROOT" -exec touch -h -d '2026-01-01 00:00:00' {} +

cat >"$CTX/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root
WORKDIR /root
LABEL org.opencontainers.image.title="gantry test node" gantry-test-image="1"
CMD ["/bin/sleep", "2147483647"]
EOF
# DOCKER_BUILDKIT=0: the classic builder is always in docker.io; buildx may not be.
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$CTX" >/dev/null 2>"$CTX/build.err" ||
  { cat "$CTX/build.err" >&2; die "docker build of $IMAGE failed"; }
echo "$IMAGE"
