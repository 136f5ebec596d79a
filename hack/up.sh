#!/usr/bin/env bash
# The main job on a fresh machine: bring up the local cluster (a real control plane with KWOK GPU
# nodes), install the CRD and run the operator, deploy the example model and follow it until Ready.
# Stop everything with hack/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/gpu-classifier.yaml}
bash hack/install.sh
bin=$(bash hack/build-control-plane.sh | tail -n 1)
export PATH="$bin:$PWD/.venv/bin:$PATH" TRITONOPS_BIN_DIR="$bin"
tritonops dev up --cpu-nodes 1 --gpu-nodes 2 --gpus-per-node 2
KUBECONFIG=$(tritonops dev kubeconfig)
export KUBECONFIG
state=$(dirname "$KUBECONFIG")
kubectl apply --server-side --force-conflicts -f crds/modeldeployments.tritonops.io.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/modeldeployments.tritonops.io >/dev/null
if ! { [ -f "$state/operator.pid" ] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; }; then
  nohup tritonops run --metrics-port 18080 --health-port 18081 > "$state/operator.log" 2>&1 &
  echo $! > "$state/operator.pid"
  echo "operator started (log: $state/operator.log)"
fi
kubectl apply -f "$example"
name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$example")
echo "waiting for modeldeployment/$name to become Ready ..."
last=""
for _ in $(seq 180); do
  now=$(kubectl get md "$name" --no-headers 2>/dev/null || true)
  [ "$now" != "$last" ] && { echo "$now"; last=$now; }
  if [ "$(kubectl get md "$name" -o jsonpath='{.status.conditions[?(@.type=="InvalidSpec")].status}')" = True ]; then
    kubectl describe md "$name"; echo "modeldeployment/$name: the operator cannot honour this spec (above)" >&2; exit 1
  fi
  if [ "$(kubectl get md "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; then
    echo; kubectl get md,deployments,pods,services -l "tritonops.io/modeldeployment=$name" -o wide
    kubectl get md "$name"
    echo; echo "export KUBECONFIG=$KUBECONFIG   # to use kubectl against the local cluster"
    exit 0
  fi
  sleep 1
done
kubectl describe md "$name"
echo "modeldeployment/$name did not become Ready in 180s (operator log: $state/operator.log)" >&2
exit 1
