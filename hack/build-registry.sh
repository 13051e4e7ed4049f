#!/usr/bin/env bash
# build-registry.sh builds the CNCF distribution registry (cmd/registry) that the end-to-end pull test runs,
# from its Go module through the module proxy, into a cache under bin/ that later runs reuse.
#
# The pull test needs a real registry with htpasswd auth and TLS; building the tagged module keeps it
# independent of a container engine and of the host's packages, as hack/build-controlplane.sh does for etcd.
#
# Usage: hack/build-registry.sh [DEST]   (default: bin/registry/<version without v>)
# Prints the path of the registry binary on its last line.
set -euo pipefail

REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/bin/registry/${REGISTRY_VERSION#v}}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

log() { echo "build-registry: $*" >&2; }

bin=$dest/registry
if [ -x "$bin" ] && [ -f "$bin.version" ] && [ "$(cat "$bin.version")" = "$REGISTRY_VERSION" ]; then
  log "registry $REGISTRY_VERSION cached"
  echo "$bin"
  exit 0
fi

log "building registry $REGISTRY_VERSION"
# The scratch module only names the version to build; the module cache keeps the sources for a rebuild.
mod=$(mktemp -d)
trap 'rm -rf "$mod"' EXIT
cat >"$mod/go.mod" <<GOMOD
module registry/distribution

go 1.24

require github.com/distribution/distribution/v3 $REGISTRY_VERSION
GOMOD
# The version package prints what `registry --version` reports; upstream's Makefile sets it the same way.
ld="-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
(cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$bin.tmp" github.com/distribution/distribution/v3/cmd/registry)
mv "$bin.tmp" "$bin"
echo "$REGISTRY_VERSION" >"$bin.version"
echo "$bin"
