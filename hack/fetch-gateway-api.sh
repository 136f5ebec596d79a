#!/usr/bin/env bash
# Fetch the Gateway API's standard-channel CRDs (HTTPRoute, Gateway, GatewayClass, ReferenceGrant, ...) for the
# tests of canary traffic routing. They come from the Go module sigs.k8s.io/gateway-api through the Go module
# proxy (the only place this machine, developers and CI can reach that publishes them), pinned by version and
# by the module's h1: hash so a changed upstream zip fails loudly instead of changing the schema under test.
# Only CustomResourceDefinitions are kept: the module's config/crd/standard also holds a
# ValidatingAdmissionPolicy (safe-upgrades) that would govern every CRD write of a shared cluster.
# Idempotent: cached under ~/.cache/tritonops/crds/gateway-api-<version>/ (never in git). Measured here: 0.3 s
# cold (module download included), 15 ms cached. Prints the directory on stdout (last line); progress on stderr.
set -euo pipefail
version=v1.6.3
sum="h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc="
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
dir="$cache/crds/gateway-api-$version"
mkdir -p "$cache/crds"
# Two test processes may fetch at once; the second waits and then finds the cache.
exec 9>"$cache/crds/.gateway-api.lock"
flock 9
if [ -f "$dir/.complete" ]; then
  echo "[fetch-gateway-api] $version: cached" >&2
  echo "$dir"
  exit 0
fi

echo "[fetch-gateway-api] $version: downloading sigs.k8s.io/gateway-api" >&2
# Outside any module, so no go.mod of ours decides the version; -json reports where the module was unpacked.
if ! info=$(cd / && GOWORK=off go mod download -json "sigs.k8s.io/gateway-api@$version"); then
  printf '%s\n' "$info" >&2  # with -json, go reports the error in the JSON on stdout
  exit 1
fi
field() { printf '%s\n' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p"; }
got=$(field Sum)
src="$(field Dir)/config/crd/standard"
if [ "$got" != "$sum" ]; then
  echo "[fetch-gateway-api] sigs.k8s.io/gateway-api@$version has sum $got, pinned $sum" >&2
  exit 1
fi

# Build in a temporary directory and rename it, so an interrupted run never leaves a half-filled cache.
tmp=$(mktemp -d "$cache/crds/.gateway-api-$version.XXXXXX")
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
for f in "$src"/*.yaml; do
  # Keep a file only when every document in it is a CRD (the module cache's files are read-only: install -m).
  if ! grep -q '^kind:' "$f" || grep '^kind:' "$f" | grep -qv '^kind: CustomResourceDefinition$'; then
    echo "[fetch-gateway-api] skipping $(basename "$f") (not only CRDs)" >&2
    continue
  fi
  install -m 0644 "$f" "$tmp/"
done
if [ ! -f "$tmp/gateway.networking.k8s.io_httproutes.yaml" ]; then
  echo "[fetch-gateway-api] no HTTPRoute CRD in $src" >&2
  exit 1
fi
printf '%s\n' "$version" > "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "[fetch-gateway-api] $version: $(find "$dir" -name '*.yaml' | wc -l) CRD files in $dir" >&2
echo "$dir"
