#!/usr/bin/env bash
# The container smoke test: builds the image from deploy/Dockerfile with podman (bases made here
# by scripts/container-base.sh, since no registry is reachable), starts deploy/compose.yaml with
# podman-compose (etcd, Redis, a store with its agent, the API), writes a tiny dataset through the
# store's socket, submits a training job over HTTP on 127.0.0.1, waits for it to succeed, then
# stops every Trellis container with SIGTERM and checks that each exits 0 (node is PID 1 there).
# Tears everything down on exit (containers, volumes, network, the image it built); the base
# images stay for the next run (--clean removes them too). Too slow for `npm test`: run it alone.
#   sudo bash scripts/container-smoke.sh [--clean]
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
clean_bases=${1:-}

bash scripts/system-deps.sh container
bash scripts/container-base.sh
source scripts/container-env.sh

version=$(node -p "require('./package.json').version")
image=localhost/trellis:$version-smoke
project=trellis-smoke-$$
compose=(podman-compose -p "$project" -f deploy/compose.yaml)
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
api=http://127.0.0.1:$port
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
export TRELLIS_IMAGE=$image ETCD_IMAGE=$SERVICES_TAG REDIS_IMAGE=$SERVICES_TAG TRELLIS_TOKEN=$token TRELLIS_API_PORT=$port

log() { echo "container-smoke: $*" >&2; }
teardown() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    log "FAILED; the containers' last words:"
    for s in store agent api; do podman logs --tail 20 "${project}_${s}_1" 2>&1 | sed "s/^/  $s: /" >&2 || true; done
  fi
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  # podman-compose 1.0 leaves the project's network behind.
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  podman rmi -f "$image" >/dev/null 2>&1 || true
  podman image prune -f --filter label=trellis.stage=build >/dev/null 2>&1 || true
  if [ "$clean_bases" = --clean ]; then podman rmi -f "$BASE_TAG" "$BUILD_TAG" "$SERVICES_TAG" >/dev/null 2>&1 || true; fi
  left=$(podman ps -a --filter "name=$project" --format '{{.Names}}'; podman volume ls -q --filter "name=$project"; podman network ls -q --filter "name=$project")
  [ -z "$left" ] || log "left behind: $left"
  log "$([ "$rc" = 0 ] && echo passed || echo failed) in $(($(date +%s) - started)) s"
}
trap teardown EXIT

# Polls `$@` every second until it succeeds, for at most $1 seconds.
until_ok() {
  local limit=$1
  shift
  for _ in $(seq "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "gave up after ${limit}s waiting for: $*"
  return 1
}
get() { curl -fsS -H "Authorization: Bearer $token" "$api$1"; }
field() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const v=JSON.parse(s)$1;console.log(typeof v==='string'?v:JSON.stringify(v))})"; }

log "building $image"
t0=$(date +%s)
podman build -f deploy/Dockerfile --build-arg BASE_IMAGE="$BASE_TAG" --build-arg BUILD_IMAGE="$BUILD_TAG" \
  --secret id=npm_ca,src="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}" -t "$image" . \
  >"$CACHE_DIR/smoke-build.log" 2>&1 || { tail -30 "$CACHE_DIR/smoke-build.log" >&2; exit 1; }
log "built in $(($(date +%s) - t0)) s"

"${compose[@]}" up -d >/dev/null 2>&1
until_ok 120 get /v1/nodes
until_ok 60 sh -c "curl -fsS -H 'Authorization: Bearer $token' $api/v1/nodes | grep -q node-a"
log "API on $api sees node-a"
for s in store agent api; do
  uid=$(podman exec "${project}_${s}_1" id -u)
  [ "$uid" = 10001 ] || { log "$s runs as uid $uid, not 10001"; exit 1; }
done

# The dataset goes in through the store's socket, as a training process on the node would write it.
written=$(podman exec "${project}_store_1" node /app/dist/examples/smoke/smoke-job.js --socket /run/trellis/store.sock)
log "$written"
dataset=$(echo "$written" | field .name)

spec='{"id":"smoke-1","kind":"train","dataset":"'$dataset'","model":{"kind":"softmax"},"epochs":1,"batchSize":64}'
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d "$spec" "$api/v1/jobs")
[ "$code" = 201 ] || { log "POST /v1/jobs answered $code, not 201"; exit 1; }
until_ok 180 sh -c "curl -fsS -H 'Authorization: Bearer $token' $api/v1/jobs/smoke-1 | grep -Eq '\"state\":\"(succeeded|failed|cancelled)\"'"
job=$(get /v1/jobs/smoke-1)
state=$(echo "$job" | field .state)
log "job smoke-1 $state: $(echo "$job" | field .result)"
[ "$state" = succeeded ] || { log "$job"; exit 1; }

# SIGTERM to every Trellis container (node is PID 1): each must exit 0 well within the timeout.
for s in api agent store; do
  name=${project}_${s}_1
  t0=$(date +%s)
  podman stop -t 30 "$name" >/dev/null
  rc=$(podman inspect -f '{{.State.ExitCode}}' "$name")
  log "$s stopped by SIGTERM: exit $rc after $(($(date +%s) - t0)) s"
  [ "$rc" = 0 ] || exit 1
done
