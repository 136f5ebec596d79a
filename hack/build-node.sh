#!/usr/bin/env bash
# Build and install what a real node of the local cluster runs (`tritonops dev up --real-nodes 1`):
#   kubelet and kube-proxy from the pinned k8s.io/kubernetes module (hack/bins/kube, the control plane's pins),
#   and Debian's containerd, runc, containernetworking-plugins, iptables and conntrack (apt, when missing).
# Idempotent: binaries are cached under ~/.cache/tritonops/bins/node-<k8s>-<key>/ where <key> hashes the kube
# module pins and this script; a cached run takes ~0.1 s. Cold after the control plane: 22 s on 2 cores (they
# share the Go build cache; alone, kubelet takes ~3 min). Prints the bin directory on stdout (last line).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mods="$here/bins"
key=$(cat "$mods/kube/go.mod" "$mods/kube/go.sum" "$here/$(basename "$0")" | sha256sum | cut -c1-12)
k8s=$(cd "$mods/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/node-$k8s-$key"
mkdir -p "$bin"
exec 9>"$cache/bins/.build-node.lock"
flock 9
log() { printf '[build-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Debian packages: the CRI runtime, the OCI runtime, the CNI plugins and the iptables tools kube-proxy uses.
# shellcheck source=hack/lib/apt.sh
. "$here/lib/apt.sh"
apt_need containerd:containerd runc:runc containernetworking-plugins:/usr/lib/cni/bridge iptables:iptables \
  conntrack:conntrack

export CGO_ENABLED=0 GOFLAGS="-mod=mod -tags=selinux,notest"
minor=$(echo "$k8s" | cut -d. -f2)
kv=""
for x in gitVersion=$k8s gitMajor=1 gitMinor=$minor gitTreeState=clean; do
  kv="$kv -X k8s.io/component-base/version.$x -X k8s.io/client-go/pkg/version.$x"
done
for c in kubelet kube-proxy; do
  if [ -x "$bin/$c" ]; then log "$c: cached"; continue; fi
  t0=$SECONDS
  log "$c: building k8s.io/kubernetes/cmd/$c $k8s"
  (cd "$mods/kube" && go build -trimpath -ldflags "-s -w $kv" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c")
  mv "$bin/$c.tmp" "$bin/$c"
  log "$c: built in $((SECONDS - t0))s"
done
printf '%s\n' "k8s=$k8s containerd=$(containerd --version | awk '{print $3}') runc=$(runc --version | awk 'NR==1{print $3}')" \
  > "$bin/VERSIONS"
for old in "$cache"/bins/node-*; do
  [ "$old" = "$bin" ] || rm -rf "$old"
done
log "done: $bin"
echo "$bin"
