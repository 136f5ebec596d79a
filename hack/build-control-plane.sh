#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the tests and `tritonops dev up`:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes), etcd, kwok, helm.
# Idempotent: binaries are cached under ~/.cache/tritonops/bins/<k8s>-<key>/ where <key> hashes the pinned
# go.mod/go.sum files and this script, so a version bump rebuilds and an unchanged checkout reuses the
# cache. Concurrent runs serialize on a lock file in the cache; the whole cached path takes ~0.1 s.
# Prints the bin directory on stdout (last line); progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mods="$here/bins"
# Key only on the modules built here (other hack/bins/* modules, e.g. s3, have their own scripts).
key=$(cd "$mods" && cat kube/go.mod kube/go.sum etcd/go.mod etcd/go.sum kwok/go.mod kwok/go.sum \
      helm/go.mod helm/go.sum "$here/$(basename "$0")" | sha256sum | cut -c1-12)
# `go mod tidy` may fold a single require line into a block, so ask the go command for versions.
modver() { (cd "$mods/$1" && go list -m -f '{{.Version}}' "$2"); }
k8s=$(modver kube k8s.io/kubernetes)
[ -n "$k8s" ] || { echo "cannot read the k8s.io/kubernetes version from $mods/kube/go.mod" >&2; exit 1; }
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/$k8s-$key"
mkdir -p "$bin"
# Serialize concurrent runs (parallel test sessions, `dev up` racing a CI step): one builder at a time.
exec 9>"$cache/bins/.build.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build() { # name, module dir, package, extra ldflags...
  local name=$1 dir=$2 pkg=$3; shift 3
  if [ -x "$bin/$name" ]; then log "$name: cached"; return; fi
  local t0=$SECONDS
  log "$name: building $pkg"
  (cd "$mods/$dir" && go build -trimpath -ldflags "-s -w $*" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  log "$name: built in $((SECONDS - t0))s"
}

minor=$(echo "$k8s" | cut -d. -f2)
kv=""
for x in gitVersion=$k8s gitMajor=1 gitMinor=$minor gitTreeState=clean; do
  kv="$kv -X k8s.io/component-base/version.$x -X k8s.io/client-go/pkg/version.$x"
done
etcd_v=$(modver etcd go.etcd.io/etcd/server/v3)
helm_v=$(modver helm helm.sh/helm/v3)

build etcd etcd go.etcd.io/etcd/server/v3
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
# helm renders offline (`helm template`) for a default Kubernetes version: make it the one we build.
build helm helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$helm_v" \
  "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  GOFLAGS="-mod=mod -tags=selinux,notest" build "$c" kube "k8s.io/kubernetes/cmd/$c" "$kv"
done
# The kwok module ships the stage definitions that kwok v0.8 requires (it has no built-in stages any more);
# copy exactly the five that kwokctl uses by default next to the binaries.
kwok_dir=$(cd "$mods/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages="$kwok_dir/kustomize/stage"
rm -rf "$bin/kwok-stages.tmp"
mkdir -p "$bin/kwok-stages.tmp"
for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
         pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cp "$stages/$f.yaml" "$bin/kwok-stages.tmp/"
done
chmod -R u+w "$bin/kwok-stages.tmp"
rm -rf "$bin/kwok-stages"
mv "$bin/kwok-stages.tmp" "$bin/kwok-stages"
printf '%s\n' "k8s=$k8s etcd=$etcd_v helm=$helm_v" > "$bin/VERSIONS"
# Older builds of the same tools (previous pins) are dead weight (~0.5 GB each).
for old in "$cache"/bins/v*-*; do
  [ "$old" = "$bin" ] || rm -rf "$old"
done
log "done: $bin"
echo "$bin"
