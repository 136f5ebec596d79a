#!/usr/bin/env bash
# The main job on a fresh machine: bring up the local cluster (a real control plane, KWOK GPU nodes and one
# real node that runs real containers), install the CRD, run the operator, put the example model into a
# local S3 server, deploy examples/local-classifier.yaml onto the real node, follow it until Ready, then
# send a real inference request through its Service and print the answer.
# Stop everything with hack/down.sh. Needs root (the real node runs containerd, kubelet and kube-proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
example=examples/local-classifier.yaml
name=classifier-local
s3_port=9000
bash hack/install.sh
bin=$(bash hack/build-control-plane.sh | tail -n 1)
s3=$(bash hack/build-s3.sh | tail -n 1)
export PATH="$bin:$PWD/.venv/bin:$PATH" TRITONOPS_BIN_DIR="$bin"
tritonops dev up --cpu-nodes 1 --gpu-nodes 2 --gpus-per-node 2 --real-nodes 1
KUBECONFIG=$(tritonops dev kubeconfig)
export KUBECONFIG
state=$(dirname "$KUBECONFIG")
gateway=$(python -c 'from tritonops.devcluster.nodeconf import GATEWAY; print(GATEWAY)')
kubectl apply --server-side --force-conflicts -f crds/modeldeployments.tritonops.io.yaml >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/modeldeployments.tritonops.io >/dev/null
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running "$state/operator.pid"; then
  nohup tritonops run --metrics-port 18080 --health-port 18081 --listen-address 127.0.0.1 > "$state/operator.log" 2>&1 &
  echo $! > "$state/operator.pid"
  echo "operator started (log: $state/operator.log)"
fi

# The model store: versitygw on the real node's bridge address (pods reach it; nothing off this machine does).
model="$state/example-model"
[ -f "$model/model.onnx" ] || python examples/model/make_model.py "$model" >/dev/null
mkdir -p "$state/model-store/models/classifier"
cp "$model/model.onnx" "$state/model-store/models/classifier/model.onnx"
digest="sha256:$(sha256sum "$model/model.onnx" | cut -d' ' -f1)"
if [ ! -f "$state/model-store.env" ]; then
  umask 077
  printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=us-east-1\nAWS_ENDPOINT_URL=http://%s:%s\n' \
    "local$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" \
    "$gateway" "$s3_port" > "$state/model-store.env"
  umask 022
fi
if ! running "$state/model-store.pid"; then
  # shellcheck disable=SC1091
  (set -a; . "$state/model-store.env"; set +a
   nohup "$s3" --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --port "$gateway:$s3_port" --quiet \
     posix --nometa "$state/model-store" > "$state/model-store.log" 2>&1 & echo $! > "$state/model-store.pid")
  echo "model store (versitygw) on http://$gateway:$s3_port (log: $state/model-store.log)"
fi
kubectl create secret generic model-store --from-env-file="$state/model-store.env" --dry-run=client -o yaml \
  | kubectl apply -f - >/dev/null
python - "$example" "$digest" <<'PY' | kubectl apply -f -
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
doc["spec"]["model"]["digest"] = sys.argv[2]
print(yaml.safe_dump(doc, sort_keys=False))
PY

echo "waiting for modeldeployment/$name to become Ready ..."
last=""
ready=""
for _ in $(seq 300); do
  now=$(kubectl get md "$name" --no-headers 2>/dev/null || true)
  [ "$now" != "$last" ] && { echo "$now"; last=$now; }
  if [ "$(kubectl get md "$name" -o jsonpath='{.status.conditions[?(@.type=="InvalidSpec")].status}')" = True ]; then
    kubectl describe md "$name"; echo "modeldeployment/$name: the operator cannot honour this spec (above)" >&2; exit 1
  fi
  if [ "$(kubectl get md "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; then
    ready=1; break
  fi
  sleep 1
done
if [ -z "$ready" ]; then
  kubectl describe md "$name"
  echo "modeldeployment/$name did not become Ready in 300s (operator log: $state/operator.log)" >&2
  exit 1
fi
echo
kubectl get md,deployments,pods,services -l "tritonops.io/modeldeployment=$name" -o wide

ip=$(kubectl get service "$name" -o jsonpath='{.spec.clusterIP}')
request=$(python -c 'import json, sys; x = json.load(open(sys.argv[1]))["inputs"][0]
print(json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": x}]}))' \
  "$model/sample.json")
echo
echo "inference through Service $name ($ip:8000), served by Triton on the real node:"
echo "  request:    $request"
answer=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' -d "$request" \
  "http://$ip:8000/v2/models/classifier/infer")
echo "  prediction: $answer"
cat <<EOF

Call it yourself (from this machine; ClusterIPs are routed by kube-proxy):
  export KUBECONFIG=$KUBECONFIG
  curl -s http://$ip:8000/v2/models/classifier                      # model metadata
  curl -s -X POST -d '$request' http://$ip:8000/v2/models/classifier/infer
  gRPC: $ip:8001 (tritonclient.grpc); Triton metrics: curl -s http://$ip:8002/metrics
  kubectl logs deploy/\$(kubectl get md $name -o jsonpath='{.status.stableRevision}') -c triton
GPU placement (KWOK GPU nodes, no containers run): kubectl apply -f examples/gpu-classifier.yaml
Stop everything: bash hack/down.sh
EOF
