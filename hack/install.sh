#!/usr/bin/env bash
# Install the operator, the runtime and the dev tools into ./.venv (idempotent; skips when current).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.tritonops-installed
want=$(cat pyproject.toml runtime/pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ./runtime -e '.[dev]'
  echo "$want" > "$stamp"
fi
