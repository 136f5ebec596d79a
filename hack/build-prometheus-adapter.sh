#!/usr/bin/env bash
# Build prometheus-adapter (sigs.k8s.io/prometheus-adapter), the aggregated API server that serves the custom and
# external metrics APIs (custom.metrics.k8s.io, external.metrics.k8s.io) from Prometheus queries: what the real
# HPA controller reads when Triton pods scale on their own metrics (tests/autoscaling_support.py runs it).
# The module is built with the k8s.io libraries its release pins (v0.30.x): they build with Go 1.26 as they are,
# so hack/bins/prometheus-adapter/go.mod needs no replace lines.
# Idempotent: cached under ~/.cache/tritonops/bins/prometheus-adapter-<version>-<key>/prometheus-adapter, <key>
# hashing hack/bins/prometheus-adapter/go.{mod,sum} and this script, so a version bump rebuilds and an unchanged
# checkout reuses the cache; older builds are removed. Prints the binary's path on stdout (last line); progress
# goes to stderr. Measured on 2 cores: 163 s cold (empty Go module and build caches, downloads included), 13 s
# when only the binary is missing (Go caches warm), 0.1 s cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/bins/prometheus-adapter"
key=$(cat "$mod/go.mod" "$mod/go.sum" "$here/$(basename "$0")" | sha256sum | cut -c1-12)
# `go mod tidy` may fold a single require line into a block, so ask the go command for the version.
version=$(cd "$mod" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' sigs.k8s.io/prometheus-adapter)
[ -n "$version" ] || { echo "cannot read the prometheus-adapter version from $mod/go.mod" >&2; exit 1; }
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/prometheus-adapter-$version-$key"
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/prometheus-adapter" ]; then
  echo "[build-prometheus-adapter] prometheus-adapter $version: cached" >&2
else
  echo "[build-prometheus-adapter] prometheus-adapter $version: building" >&2
  t0=$SECONDS
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
     -o "$bin/prometheus-adapter.tmp" sigs.k8s.io/prometheus-adapter/cmd/adapter)
  mv "$bin/prometheus-adapter.tmp" "$bin/prometheus-adapter"
  printf '%s\n' "$version" > "$bin/VERSION"
  echo "[build-prometheus-adapter] prometheus-adapter: built in $((SECONDS - t0))s" >&2
  # Builds of previous pins are dead weight (~60 MB each).
  for old in "$cache"/bins/prometheus-adapter-*; do
    [ "$old" = "$bin" ] || rm -rf "$old"
  done
fi
echo "$bin/prometheus-adapter"
