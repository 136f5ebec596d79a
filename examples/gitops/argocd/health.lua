-- Argo CD health check of tritonops.io/ModelDeployment (resource.customizations.health.tritonops.io_ModelDeployment).
-- Reads only what the operator reports: status.observedGeneration and the conditions Ready, Progressing,
-- Degraded and InvalidSpec; spec.rollout.paused, or a tritonops.io/pause annotation naming the canary
-- revision, makes a rollout Suspended.
local hs = {}

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": " .. c.message
    else
      text = c.message
    end
  end
  if text == "" then
    return fallback
  end
  return text
end

local generation = obj.metadata.generation or 0
local observed = 0
if obj.status ~= nil and obj.status.observedGeneration ~= nil then
  observed = obj.status.observedGeneration
end

-- Stale status describes an older spec: do not trust any condition until the operator caught up.
if obj.status == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local invalid = condition("InvalidSpec")
if isTrue(invalid) then
  hs.status = "Degraded"
  hs.message = describe(invalid, "The operator cannot honour the spec")
  return hs
end

local degraded = condition("Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded, "The rollout is blocked")
  return hs
end

if obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true then
  hs.status = "Suspended"
  hs.message = "Rollout paused (spec.rollout.paused)"
  return hs
end
if obj.status.canaryRevision ~= nil and obj.status.canaryRevision ~= "" and obj.metadata.annotations ~= nil
    and obj.metadata.annotations["tritonops.io/pause"] == obj.status.canaryRevision then
  hs.status = "Suspended"
  hs.message = "Canary " .. obj.status.canaryRevision .. " paused (tritonops.io/pause)"
  return hs
end

local progressing = condition("Progressing")
if isTrue(progressing) then
  hs.status = "Progressing"
  hs.message = describe(progressing, "Rolling out a new revision")
  return hs
end

local ready = condition("Ready")
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the serving revision to become ready")
return hs
