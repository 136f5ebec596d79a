-- Pause the rollout where it is (spec.rollout.paused: true); serving continues unchanged.
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.paused = true
return obj
