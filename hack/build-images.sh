#!/usr/bin/env bash
# Build the OCI image archives that pods on the local real node run (no Docker, no registry): the pause
# image (hack/pause/pause.c), the tritonops runtime image (runtime/) and a CPU tritonserver image from the
# nvidia-pytriton wheel. See operator/tritonops/devcluster/images.py for what goes into each.
# Idempotent: cached under ~/.cache/tritonops/images/<image>-<key>.tar (or $TRITONOPS_CACHE/images), <key>
# hashing each recipe's inputs; concurrent runs serialize on a lock per image. Needs root (mmdebstrap, chroot).
# Prints the three archive paths on stdout (pause, runtime, triton); progress goes to stderr.
# Cold build on 2 cores: about 1 minute (Debian packages and wheels downloaded once); cached: under 1 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || { bash "$here/install.sh" >&2; py=$root/.venv/bin/python; }
cd "$root"
# shellcheck source=hack/lib/apt.sh
. "$here/lib/apt.sh"
apt_need mmdebstrap:mmdebstrap gcc:gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a
PYTHONPATH="$root/operator${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m tritonops.devcluster.images build
