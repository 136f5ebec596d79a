#!/usr/bin/env bash
# Stop what hack/up.sh started: the operator and the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
if kc=$(.venv/bin/tritonops dev kubeconfig 2>/dev/null); then
  pidfile="$(dirname "$kc")/operator.pid"
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
fi
.venv/bin/tritonops dev down
