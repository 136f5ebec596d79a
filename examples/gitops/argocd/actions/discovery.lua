-- Argo CD resource actions of tritonops.io/ModelDeployment: which ones the UI offers, and when.
-- promote/abort/pause act on the canary revision the operator reports in status.canaryRevision (annotations
-- naming it); resume removes the pause annotation; retrain asks for a retraining run (spec.retraining must
-- be enabled).
local actions = {}

local canary = obj.status ~= nil and obj.status.canaryRevision ~= nil and obj.status.canaryRevision ~= ""
local paused = canary and obj.metadata.annotations ~= nil
  and obj.metadata.annotations["tritonops.io/pause"] == obj.status.canaryRevision
local retraining = obj.spec ~= nil and obj.spec.retraining ~= nil and obj.spec.retraining.enabled == true

actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward"}
actions["abort"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-times-circle"}
actions["pause"] = {["disabled"] = not canary or paused, ["iconClass"] = "fa fa-fw fa-pause-circle"}
actions["resume"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play-circle"}
actions["retrain"] = {["disabled"] = not retraining, ["iconClass"] = "fa fa-fw fa-redo"}
return actions
