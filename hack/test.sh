#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, build the control plane (cached under
# ~/.cache/tritonops), lint, type-check, check generated files, then every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - t0))"; }

step "install"
bash hack/install.sh
bash hack/install-test-deps.sh
step "build control plane (cached)"
TRITONOPS_BIN_DIR=$(bash hack/build-control-plane.sh | tail -n 1)
export TRITONOPS_BIN_DIR
step "build S3 server (cached)"
bash hack/build-s3.sh >/dev/null
step "build kube-score, the Kubernetes policy linter of tests/chart/test_kube_score.py (cached)"
TRITONOPS_KUBE_SCORE=$(bash hack/build-kube-score.sh | tail -n 1)
export TRITONOPS_KUBE_SCORE
step "build prometheus-adapter and metrics-server (custom/external and resource metrics APIs), fetch KEDA's CRDs (cached)"
TRITONOPS_PROMETHEUS_ADAPTER=$(bash hack/build-prometheus-adapter.sh | tail -n 1)
TRITONOPS_METRICS_SERVER=$(bash hack/build-metrics-server.sh | tail -n 1)
TRITONOPS_KEDA_CRDS=$(bash hack/fetch-keda-crds.sh | tail -n 1)
export TRITONOPS_PROMETHEUS_ADAPTER TRITONOPS_METRICS_SERVER TRITONOPS_KEDA_CRDS
step "build the real node: kubelet, kube-proxy, Debian containerd/runc/CNI (cached)"
TRITONOPS_NODE_BIN_DIR=$(bash hack/build-node.sh | tail -n 1)
export TRITONOPS_NODE_BIN_DIR
step "build the real node's images (cached)"
bash hack/build-images.sh >/dev/null
step "build the retraining image: runtime/ + the venv's torch, onnx, onnxruntime (cached; 3.3 GiB)"
bash hack/build-retrain-image.sh >/dev/null
step "lint"
.venv/bin/ruff check .
.venv/bin/mypy
step "generated files are current"
.venv/bin/tritonops crd --check
step "tests"
.venv/bin/pytest "$@"
