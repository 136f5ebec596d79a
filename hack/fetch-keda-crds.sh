#!/usr/bin/env bash
# Fetch KEDA's CustomResourceDefinitions (ScaledObject, ScaledJob, TriggerAuthentication,
# ClusterTriggerAuthentication, CloudEventSource, ClusterCloudEventSource) for the autoscaling tests: the operator
# writes ScaledObjects, so the test cluster must serve the real schema. They come from the Go module
# github.com/kedacore/keda/v2 (its config/crd/bases) through the Go module proxy, pinned by version and by the
# module's h1: hash so a changed upstream zip fails loudly instead of changing the schema under test.
# Idempotent: cached under ~/.cache/tritonops/crds/keda-<version>/ (never in git); older versions are removed.
# Measured here: about 1 s cold (a 3 MB module zip, empty module cache), 10 ms cached.
# Prints the directory on stdout (last line); progress on stderr.
set -euo pipefail
version=v2.21.0
sum="h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps="
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
dir="$cache/crds/keda-$version"
mkdir -p "$cache/crds"
# Two test processes may fetch at once; the second waits and then finds the cache.
exec 9>"$cache/crds/.keda.lock"
flock 9
if [ -f "$dir/.complete" ]; then
  echo "[fetch-keda-crds] $version: cached" >&2
  echo "$dir"
  exit 0
fi

echo "[fetch-keda-crds] $version: downloading github.com/kedacore/keda/v2" >&2
# Outside any module, so no go.mod of ours decides the version; -json reports where the module was unpacked.
if ! info=$(cd / && GOWORK=off GOFLAGS= go mod download -json "github.com/kedacore/keda/v2@$version"); then
  printf '%s\n' "$info" >&2  # with -json, go reports the error in the JSON on stdout
  exit 1
fi
field() { printf '%s\n' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p"; }
got=$(field Sum)
src="$(field Dir)/config/crd/bases"
if [ "$got" != "$sum" ]; then
  echo "[fetch-keda-crds] github.com/kedacore/keda/v2@$version has sum $got, pinned $sum" >&2
  exit 1
fi

# Build in a temporary directory and rename it, so an interrupted run never leaves a half-filled cache.
tmp=$(mktemp -d "$cache/crds/.keda-$version.XXXXXX")
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
for f in "$src"/*.yaml; do
  # Keep a file only when every document in it is a CRD (the module cache's files are read-only: install -m).
  if ! grep -q '^kind:' "$f" || grep '^kind:' "$f" | grep -qv '^kind: CustomResourceDefinition$'; then
    echo "[fetch-keda-crds] skipping $(basename "$f") (not only CRDs)" >&2
    continue
  fi
  install -m 0644 "$f" "$tmp/"
done
if [ ! -f "$tmp/keda.sh_scaledobjects.yaml" ]; then
  echo "[fetch-keda-crds] no ScaledObject CRD in $src" >&2
  exit 1
fi
printf '%s\n' "$version" > "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
# Other pins' CRDs are dead weight.
for old in "$cache"/crds/keda-*; do
  [ "$old" = "$dir" ] || rm -rf "$old"
done
echo "[fetch-keda-crds] $version: $(find "$dir" -name '*.yaml' | wc -l) CRD files in $dir" >&2
echo "$dir"
