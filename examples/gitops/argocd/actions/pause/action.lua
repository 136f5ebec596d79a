-- Pause the current canary where it is: weight and replicas stay, no step completes. The annotation names
-- the canary revision, so it holds only this canary; an annotation that is not in Git is no GitOps drift.
-- (spec.rollout.paused is the declarative pause: set it in Git.)
if obj.status == nil or obj.status.canaryRevision == nil or obj.status.canaryRevision == "" then
  error("no canary revision to pause", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tritonops.io/pause"] = obj.status.canaryRevision
return obj
