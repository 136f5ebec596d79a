-- Resume a canary paused by the pause action (removes the tritonops.io/pause annotation). A pause declared
-- in Git (spec.rollout.paused) is resumed in Git.
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["tritonops.io/pause"] = nil
end
return obj
