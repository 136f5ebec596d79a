{{/*
The operator's permissions, shared by the per-namespace Roles and the cluster-wide ClusterRole.
Exactly what operator/tritonops/kube.py, controller.py, informer.py and handlers.py call, plus what kopf needs;
tests/chart/test_rbac.py removes one verb at a time and shows the operator then fails (or logs a denial).
No wildcards, and no access to Secrets: the fetcher pods read model-store credentials through envFrom.
*/}}
{{- define "tritonops.rules" -}}
# ModelDeployments: kopf lists and watches them (on.event handler) into the operator's cache, from which
# every reconcile cycle reads its object (no GET).
- apiGroups: ["tritonops.io"]
  resources: ["modeldeployments"]
  verbs: ["list", "watch"]
# Children carry an ownerReference with blockOwnerDeletion: true; where the OwnerReferencesPermission-
# Enforcement admission plugin is on (OpenShift, hardened clusters) that needs `update` on the owner's
# finalizers subresource. The operator itself never sets a finalizer.
- apiGroups: ["tritonops.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# Status is the only part of a ModelDeployment the operator writes (merge patch on the subresource).
- apiGroups: ["tritonops.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# One Deployment per revision: written by server-side apply (PATCH; the API server also checks `create`
# when the PATCH creates the object), deleted once a newer revision serves; the operator's informer lists
# and watches them (by label) into its cache, which cycles read. Before creating a child the controller
# reads its name (get) so that it never adopts an object someone else created there.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Service of each ModelDeployment (HTTP, gRPC, metrics): applied, listed and watched (owner references
# let the garbage collector remove it with its ModelDeployment). A canary routed through a Gateway API
# HTTPRoute also has a Service per revision, deleted with its revision.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The immutable per-revision ConfigMap with config.pbtxt: applied, listed and watched, deleted with its
# revision.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Triton pods: read only (listed and watched into the cache), to explain why a revision is not ready
# (unschedulable, fetch or load failures). Watched here; listed here unless the scanning ClusterRole lists them in every namespace (growth bounded by
# free GPUs counts the pods of the whole cluster), so that no permission is granted twice.
- apiGroups: [""]
  resources: ["pods"]
  {{- if and (not .Values.clusterWide) .Values.rbac.kopfScanning }}
  verbs: ["watch"]
  {{- else }}
  verbs: ["list", "watch"]
  {{- end }}
# Retraining Jobs (spec.retraining): listed and watched by label into the cache (a finished Job triggers the
# next cycle; the informer lists them whether or not a model retrains), read
# by name before creation (never adopt), created one at a time, deleted beyond the history limits; their
# pods are read through the pods rule above (the result is the container's termination message).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Events on ModelDeployments, posted by the controller (rollout steps, invalid specs) and by kopf
# (handler failures).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The autoscaler of a ModelDeployment with spec.autoscaling: an HPA, or a KEDA ScaledObject (this rule
# grants nothing where KEDA is not installed); read by name before creation, listed, applied, and deleted
# when autoscaling is switched off or changes engine.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "create", "patch", "delete"]
# A canary with spec.rollout.canary.trafficRouting.gatewayAPI weights the backendRefs of the user's HTTPRoute:
# read by name, written by server-side apply (PATCH) under the field manager tritonops-traffic; never created
# or deleted. Without the Gateway API CRDs installed this rule grants nothing.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
{{- end }}
