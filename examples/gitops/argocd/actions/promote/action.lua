-- Promote the current canary now, skipping the remaining steps and analysis. The annotation names the
-- revision, so a request cannot leak onto a later canary (the operator never clears annotations).
if obj.status == nil or obj.status.canaryRevision == nil or obj.status.canaryRevision == "" then
  error("no canary revision to promote", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tritonops.io/promote"] = obj.status.canaryRevision
return obj
