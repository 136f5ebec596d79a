#!/usr/bin/env bash
# Stop what hack/up.sh started: the operator, the model store, the real node (undoing its host changes) and
# the local cluster. `bash hack/down.sh --force` also clears what a crashed real node left on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if kc=$(.venv/bin/tritonops dev kubeconfig 2>/dev/null); then
  state=$(dirname "$kc")
  for p in operator model-store; do
    [ -f "$state/$p.pid" ] && kill "$(cat "$state/$p.pid")" 2>/dev/null || true
    rm -f "$state/$p.pid"
  done
fi
.venv/bin/tritonops dev down "$@"
