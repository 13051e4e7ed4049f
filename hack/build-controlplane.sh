#!/usr/bin/env bash
# build-controlplane.sh builds the etcd and kube-apiserver binaries that the e2e tests and the demo run,
# from source through the Go module proxy, into a cache under bin/ that later runs reuse.
#
# There is no container engine or kind here, and envtest's own asset download reaches a bucket this project
# cannot rely on, so the control plane is compiled from the tagged module releases instead.
#
# Usage: hack/build-controlplane.sh [DEST]   (default: bin/k8s/<k8s version>)
# Prints the directory that holds etcd and kube-apiserver on its last line.
set -euo pipefail

ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are released as v0.<minor>.<patch>.
STAGING_VERSION=v0.${K8S_VERSION#v1.}

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/bin/k8s/${K8S_VERSION#v}}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
work=$root/bin/.controlplane-build
mkdir -p "$work"

log() { echo "build-controlplane: $*" >&2; }

stamp_ok() { # binary, expected version
  [ -x "$1" ] && [ -f "$1.version" ] && [ "$(cat "$1.version")" = "$2" ]
}

build_etcd() {
  if stamp_ok "$dest/etcd" "$ETCD_VERSION"; then log "etcd $ETCD_VERSION cached"; return; fi
  log "building etcd $ETCD_VERSION"
  local mod=$work/etcd
  rm -rf "$mod" && mkdir -p "$mod"
  cat >"$mod/go.mod" <<GOMOD
module controlplane/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  (cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags '-s -w' -o "$dest/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$dest/etcd.tmp" "$dest/etcd"
  echo "$ETCD_VERSION" >"$dest/etcd.version"
}

build_apiserver() {
  if stamp_ok "$dest/kube-apiserver" "$K8S_VERSION"; then log "kube-apiserver $K8S_VERSION cached"; return; fi
  log "building kube-apiserver $K8S_VERSION (several minutes cold)"
  local mod=$work/kubernetes
  rm -rf "$mod" && mkdir -p "$mod"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at ./staging with replace
  # directives, which Go ignores outside the main module; replace each with its published release.
  local upstream
  upstream=$(cd "$mod" && printf 'module tmp\n' >go.mod && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$upstream" ] || { log "cannot find go.mod of k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  {
    printf 'module controlplane/kubernetes\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    grep -oE '^[[:space:]]*k8s\.io/[a-z0-9.-]+ => \./staging/' "$upstream" | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } >"$mod/go.mod"
  local n
  n=$(grep -c '^replace' "$mod/go.mod")
  [ "$n" -gt 20 ] || { log "found only $n staging modules in $upstream"; exit 1; }
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$dest/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$dest/kube-apiserver.tmp" "$dest/kube-apiserver"
  echo "$K8S_VERSION" >"$dest/kube-apiserver.version"
}

build_etcd
build_apiserver
echo "$dest"
