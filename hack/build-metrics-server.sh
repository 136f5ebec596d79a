#!/usr/bin/env bash
# Build metrics-server (sigs.k8s.io/metrics-server), the aggregated API server of the resource metrics API
# (metrics.k8s.io: node and pod CPU/memory scraped from the kubelets' /metrics/resource), which the HPA's CPU and
# Memory presets and `kubectl top` read (tests/metrics_server.py runs it).
# Unlike hack/build-prometheus-adapter.sh there is no module of ours under hack/bins/: metrics-server's go.mod has
# no replace or exclude lines, so `go install <pkg>@<version>` builds it with exactly the dependency versions of its
# release (its own go.mod and go.sum, verified against the checksum database), k8s.io libraries v0.33.x; they build
# with Go 1.26 as they are. The version is pinned here (METRICS_SERVER_VERSION) and stamped into the binary the
# way upstream's Makefile does (k8s.io/client-go/pkg/version.gitVersion), so `metrics-server --version` reports it.
# Idempotent: cached under ~/.cache/tritonops/bins/metrics-server-<version>-<key>/metrics-server, <key> hashing this
# script, so a version bump rebuilds and an unchanged checkout reuses the cache; older builds are removed. Prints
# the binary's path on stdout (last line); progress goes to stderr. Measured on 2 cores: 354 s cold (its k8s.io v0.33
# libraries absent from the Go module and build caches, downloads included; 285 s of CPU, beside a running e2e
# test), 5 s when only the binary is missing (Go caches warm), 0.01 s cached.
set -euo pipefail
METRICS_SERVER_VERSION=v0.8.0
module=sigs.k8s.io/metrics-server
here=$(cd "$(dirname "$0")" && pwd)
key=$(sha256sum < "$here/$(basename "$0")" | cut -c1-12)
version=$METRICS_SERVER_VERSION
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/metrics-server-$version-$key"
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/metrics-server" ]; then
  echo "[build-metrics-server] metrics-server $version: cached" >&2
else
  echo "[build-metrics-server] metrics-server $version: building" >&2
  t0=$SECONDS
  # go install writes into GOBIN under the command's name: a staging directory, renamed into place once complete,
  # so an interrupted build never leaves a half-written binary in the cache. Outside any module (cd /, GOWORK=off),
  # so no go.mod or go.work of ours can change the versions; GOFLAGS= drops a -mod setting that go install refuses.
  stage=$(mktemp -d "$bin/.stage.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  (cd / && GOWORK=off GOFLAGS=-buildvcs=false GOBIN="$stage" CGO_ENABLED=0 go install -trimpath \
     -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitTreeState=clean" \
     "$module/cmd/metrics-server@$version")
  mv "$stage/metrics-server" "$bin/metrics-server"
  printf '%s\n' "$version" > "$bin/VERSION"
  echo "[build-metrics-server] metrics-server: built in $((SECONDS - t0))s" >&2
  # Builds of previous pins are dead weight (~70 MB each).
  for old in "$cache"/bins/metrics-server-*; do
    [ "$old" = "$bin" ] || rm -rf "$old"
  done
fi
echo "$bin/metrics-server"
