-- Ask for a retraining run now. The value is the request time (RFC 3339, UTC): each click is a new
-- request, and the operator starts one run per value it has not handled yet.
if obj.spec.retraining == nil or obj.spec.retraining.enabled ~= true then
  error("retraining is not enabled (spec.retraining.enabled)", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["tritonops.io/retrain"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
