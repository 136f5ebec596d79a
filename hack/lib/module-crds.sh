# shellcheck shell=bash
# fetch_module_crds NAME MODULE VERSION SUM SUBDIR MUST_HAVE: CustomResourceDefinitions published in a Go module,
# fetched through the Go module proxy (the only place this machine, developers and CI can reach that publishes
# them), pinned by version and by the module's h1: hash so that a changed upstream zip fails loudly instead of
# changing the schema under test. Only files holding nothing but CRDs are kept. Idempotent: cached under
# ~/.cache/tritonops/crds/NAME-VERSION/ (never in git), other versions removed. Prints the directory on stdout
# (last line); progress on stderr. Sourced by hack/fetch-*.sh.
fetch_module_crds() {
  local name=$1 module=$2 version=$3 sum=$4 subdir=$5 must_have=$6
  local cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
  local dir="$cache/crds/$name-$version" info got src tmp f old
  mkdir -p "$cache/crds"
  # Two test processes may fetch at once; the second waits and then finds the cache.
  exec 9>"$cache/crds/.$name.lock"
  flock 9
  if [ -f "$dir/.complete" ]; then
    echo "[fetch $name] $version: cached" >&2
    echo "$dir"
    return 0
  fi
  echo "[fetch $name] $version: downloading $module" >&2
  # Outside any module, so no go.mod of ours decides the version; -json reports where the module was unpacked.
  if ! info=$(cd / && GOWORK=off GOFLAGS= go mod download -json "$module@$version"); then
    printf '%s\n' "$info" >&2  # with -json, go reports the error in the JSON on stdout
    return 1
  fi
  got=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p')
  src="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')/$subdir"
  if [ "$got" != "$sum" ]; then
    echo "[fetch $name] $module@$version has sum $got, pinned $sum" >&2
    return 1
  fi
  # Build in a temporary directory and rename it, so an interrupted run never leaves a half-filled cache.
  tmp=$(mktemp -d "$cache/crds/.$name-$version.XXXXXX")
  chmod 0755 "$tmp"
  for f in "$src"/*.yaml; do
    # Keep a file only when every document in it is a CRD (the module cache's files are read-only: install -m).
    if ! grep -q '^kind:' "$f" || grep '^kind:' "$f" | grep -qv '^kind: CustomResourceDefinition$'; then
      echo "[fetch $name] skipping $(basename "$f") (not only CRDs)" >&2
      continue
    fi
    install -m 0644 "$f" "$tmp/"
  done
  if [ ! -f "$tmp/$must_have" ]; then
    echo "[fetch $name] no $must_have in $src" >&2
    rm -rf "$tmp"
    return 1
  fi
  printf '%s\n' "$version" > "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  for old in "$cache/crds/$name"-*; do
    [ "$old" = "$dir" ] || rm -rf "$old"
  done
  echo "[fetch $name] $version: $(find "$dir" -name '*.yaml' | wc -l) CRD files in $dir" >&2
  echo "$dir"
}
