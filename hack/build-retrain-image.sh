#!/usr/bin/env bash
# Build the retraining Job's image (localhost/tritonops/tritonops-retrain:0.1.0): runtime/ plus torch, onnx and
# onnxruntime copied from this checkout's .venv, pruned to what CPU work needs (3.3 GiB). Not part of
# hack/build-images.sh (too large for every session); tests import it into the real node on demand
# (tritonops.devcluster.retrain_image.import_retrain_image). See operator/tritonops/devcluster/retrain_image.py.
# Idempotent: cached under ~/.cache/tritonops/images/retrain-<key>.tar (or $TRITONOPS_CACHE/images), <key>
# hashing runtime/, the recipe's code and the venv's installed torch & co; silent when cached. Needs root
# (mmdebstrap, chroot) and about 10 GB free while building (cold: about 2 minutes on 2 cores; cached: under 1 s).
# Prints the archive path last; progress on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { bash "$here/install.sh" >&2; py=$root/.venv/bin/python; }
cd "$root"
# shellcheck source=hack/lib/apt.sh
. "$here/lib/apt.sh"
apt_need mmdebstrap:mmdebstrap
PYTHONPATH="$root/operator${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m tritonops.devcluster.retrain_image build
