# Sourced by the container scripts: podman set up for this machine without touching /etc.
# runc, not crun (crun fails on this host's cgroup v1 hybrid); cgroupfs, since systemd is not
# PID 1 here; file events instead of journald; ulimits lowered, because podman's defaults ask for
# more open files and processes than this host's hard limits allow (runc then refuses to start).
CACHE_DIR=${CACHE_DIR:-$PWD/.cache}
mkdir -p "$CACHE_DIR"
export CONTAINERS_CONF=$CACHE_DIR/containers.conf
cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
BASE_TAG=localhost/trellis-base:bookworm
BUILD_TAG=localhost/trellis-build:bookworm
SERVICES_TAG=localhost/trellis-services:bookworm
