-- Abort the current canary: traffic goes back to the stable revision and the canary is scaled away.
-- The annotation names the revision, so it does not abort a later canary.
if obj.status == nil or obj.status.canaryRevision == nil or obj.status.canaryRevision == "" then
  error("no canary revision to abort", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tritonops.io/abort"] = obj.status.canaryRevision
return obj
