#!/usr/bin/env bash
# Installs the Debian packages Trellis needs when they are missing.
#   system-deps.sh        the test suite and benchmarks: etcd (cluster tests), redis-server (jobs),
#                         Fashion-MNIST (real-data tests), clang-format (native lint), a C++ toolchain,
#                         unzip (the chart test's helm), prometheus (promtool checks every process's /metrics text),
#                         openssl (TLS tests' certificates), chromium (the dashboard's browser test),
#                         Debian's python3-numpy and python3-torch for /usr/bin/python3 (the Python package's
#                         tests and its PyTorch example; torch is ~170 MiB to download, ~750 MiB installed)
#   system-deps.sh demo   the main job (`npm run demo`): redis-server and Fashion-MNIST
#   system-deps.sh container  the container smoke test (scripts/container-smoke.sh): podman with
#                         runc (crun fails on this cgroup v1 hybrid), podman-compose, debootstrap
# Needs root (apt-get); without it, says what is missing and fails. For the demo a missing
# Fashion-MNIST is not fatal (the demo says it uses a generated stand-in), a missing redis-server is.
set -euo pipefail

need=()
if [ "${1:-}" = container ]; then
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v podman-compose >/dev/null || need+=(podman-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
elif [ "${1:-}" = demo ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
else
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v redis-server >/dev/null || need+=(redis-server)
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
  command -v clang-format >/dev/null || need+=(clang-format)
  command -v g++ >/dev/null || need+=(g++)
  command -v make >/dev/null || need+=(make)
  # scripts/fetch-helm.sh takes helm out of a zip (test/helm-chart.test.ts).
  command -v unzip >/dev/null || need+=(unzip)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v openssl >/dev/null || need+=(openssl)  # TLS tests make their certificates with it
  command -v chromium >/dev/null || need+=(chromium)  # the dashboard test drives it (playwright-core)
  /usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
  /usr/bin/python3 -c 'import torch' 2>/dev/null || need+=(python3-torch)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing Debian packages: ${need[*]} (install them as root: apt-get install -y ${need[*]})" >&2
  if [ "${1:-}" = demo ] && command -v redis-server >/dev/null; then exit 0; fi
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
