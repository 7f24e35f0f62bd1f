#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks use, when they
# are missing: etcd (cluster tests), redis-server (jobs tests, benchmarks), Fashion-MNIST
# (real-data tests and the demo; a generated stand-in is used without it),
# clang-format (native lint), and a C++ toolchain for the addon.
# Needs root (apt-get); without it, says what is missing and fails.
set -euo pipefail

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v redis-server >/dev/null || need+=(redis-server)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v clang-format >/dev/null || need+=(clang-format)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing Debian packages: ${need[*]} (install them as root: apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
