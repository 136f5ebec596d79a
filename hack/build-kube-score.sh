#!/usr/bin/env bash
# Build kube-score (github.com/zegl/kube-score), the Kubernetes policy linter that tests/chart/test_kube_score.py
# runs over the rendered chart and the operator's golden children. (kube-linter, the first choice, is not served
# by the Go module proxy this project builds from; kube-score checks the same things: security contexts and
# UIDs, NetworkPolicy coverage, probes, resources, image tags/pull policy, selectors.)
# Idempotent: cached under ~/.cache/tritonops/bins/kube-score-<version>-<key>/kube-score, <key> hashing
# hack/bins/kube-score/go.{mod,sum} and this script, so a version bump rebuilds and an unchanged checkout reuses
# the cache; older builds are removed. Prints the binary's path on stdout (last line); progress goes to stderr.
# Cold build on 2 cores with empty Go caches: about 50 s (module download included); cached: ~0.05 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/bins/kube-score"
key=$(cat "$mod/go.mod" "$mod/go.sum" "$here/$(basename "$0")" | sha256sum | cut -c1-12)
# `go mod tidy` may fold a single require line into a block, so ask the go command for the version.
version=$(cd "$mod" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' github.com/zegl/kube-score)
[ -n "$version" ] || { echo "cannot read the kube-score version from $mod/go.mod" >&2; exit 1; }
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/kube-score-$version-$key"
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/kube-score" ]; then
  echo "[build-kube-score] kube-score $version: cached" >&2
else
  echo "[build-kube-score] kube-score $version: building" >&2
  t0=$SECONDS
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
     -ldflags "-s -w -X main.version=${version#v} -X main.commit=go-module" \
     -o "$bin/kube-score.tmp" github.com/zegl/kube-score/cmd/kube-score)
  mv "$bin/kube-score.tmp" "$bin/kube-score"
  echo "[build-kube-score] kube-score: built in $((SECONDS - t0))s" >&2
  # Builds of previous pins are dead weight.
  for old in "$cache"/bins/kube-score-*; do
    [ "$old" = "$bin" ] || rm -rf "$old"
  done
fi
echo "$bin/kube-score"
