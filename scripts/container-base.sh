#!/usr/bin/env bash
# Makes the two base images deploy/Dockerfile needs, from Debian alone (no registry is reachable):
#   localhost/trellis-base:bookworm   debootstrap --variant=minbase bookworm plus this host's node
#                                     (stands in for node:20-bookworm-slim)
#   localhost/trellis-build:bookworm  the same plus g++, make and python3 for node-gyp and node's
#                                     headers (stands in for node:20-bookworm)
#   localhost/trellis-services:bookworm  the base plus Debian's etcd-server and redis-server
#                                     (stand in for the etcd and redis images compose.yaml names)
# The root filesystems are cached as tarballs under .cache/; images that exist are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/container-env.sh

node_bin=$(command -v node)
node_prefix=$(dirname "$(dirname "$node_bin")")
[ -d "$node_prefix/lib/node_modules/npm" ] || { echo "container-base: no npm beside $node_bin" >&2; exit 1; }

# Copies this host's node, npm and node headers into a root filesystem.
add_node() {
  local root=$1
  install -D -m 0755 "$node_bin" "$root/usr/local/bin/node"
  mkdir -p "$root/usr/local/lib/node_modules"
  cp -a "$node_prefix/lib/node_modules/npm" "$root/usr/local/lib/node_modules/"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  if [ -d "$node_prefix/include/node" ]; then
    mkdir -p "$root/usr/local/include"
    cp -a "$node_prefix/include/node" "$root/usr/local/include/"
  fi
}

make_image() {
  local tag=$1 tarball=$2
  if podman image exists "$tag"; then return; fi
  podman import -q --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$tag" >/dev/null
  echo "container-base: made $tag" >&2
}

# Installs Debian packages into a copy of the minbase root, with the host's network and resolver.
with_packages() {
  local root=$1
  shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null 2>&1 && apt-get clean && rm -rf /var/lib/apt/lists/*"
}

missing=0
for t in base build services; do [ -f "$CACHE_DIR/trellis-$t.tar" ] || missing=1; done
if [ $missing = 1 ]; then
  work=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=ca-certificates bookworm "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/base/var/cache/apt/archives/*.deb "$work"/base/var/lib/apt/lists/*
  cp -a "$work/base" "$work/build"
  cp -a "$work/base" "$work/services"
  with_packages "$work/build" g++ make python3
  with_packages "$work/services" etcd-server redis-server
  add_node "$work/base"
  add_node "$work/build"
  for t in base build services; do tar -C "$work/$t" -cf "$CACHE_DIR/trellis-$t.tar" .; done
fi
make_image "$BASE_TAG" "$CACHE_DIR/trellis-base.tar"
make_image "$BUILD_TAG" "$CACHE_DIR/trellis-build.tar"
make_image "$SERVICES_TAG" "$CACHE_DIR/trellis-services.tar"
