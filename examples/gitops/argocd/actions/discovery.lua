-- Argo CD resource actions of tritonops.io/ModelDeployment: which ones the UI offers, and when.
-- promote/abort act on the canary revision the operator reports in status.canaryRevision; pause/resume
-- toggle spec.rollout.paused; retrain asks for a retraining run (spec.retraining must be enabled).
local actions = {}

local canary = obj.status ~= nil and obj.status.canaryRevision ~= nil and obj.status.canaryRevision ~= ""
local paused = obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true
local retraining = obj.spec ~= nil and obj.spec.retraining ~= nil and obj.spec.retraining.enabled == true

actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward"}
actions["abort"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-times-circle"}
actions["pause"] = {["disabled"] = paused, ["iconClass"] = "fa fa-fw fa-pause-circle"}
actions["resume"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play-circle"}
actions["retrain"] = {["disabled"] = not retraining, ["iconClass"] = "fa fa-fw fa-redo"}
return actions
