#!/usr/bin/env bash
# Build versitygw (github.com/versity/versitygw), a real S3-compatible server with a posix backend, used by
# the runtime tests (tests/runtime) to exercise the fetcher's s3:// support with real SigV4 authentication.
# Idempotent: cached under ~/.cache/tritonops/bins/s3-<key>/versitygw, <key> hashing hack/bins/s3/go.{mod,sum}
# and this script. Prints the binary's path on stdout (last line); progress goes to stderr.
# Cold build on 2 cores: about 3 minutes (module download included).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/bins/s3"
key=$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -c1-12)
cache=${TRITONOPS_CACHE:-$HOME/.cache/tritonops}
bin="$cache/bins/s3-$key"
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9
if [ -x "$bin/versitygw" ]; then
  echo "[build-s3] versitygw: cached" >&2
else
  version=$(cd "$mod" && go list -m -f '{{.Version}}' github.com/versity/versitygw)
  echo "[build-s3] versitygw $version: building" >&2
  t0=$SECONDS
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
     -ldflags "-s -w -X main.Version=$version" -o "$bin/versitygw.tmp" github.com/versity/versitygw/cmd/versitygw)
  mv "$bin/versitygw.tmp" "$bin/versitygw"
  echo "[build-s3] versitygw: built in $((SECONDS - t0))s" >&2
fi
echo "$bin/versitygw"
