-- Argo CD health of a SecureModelDeployment, read from the status the operator writes.
-- Healthy: the Ready condition is True for the current generation.
-- Degraded: phase Degraded (a control fails, the rollout is stuck) or Blocked (the spec cannot be made
--   safe, e.g. an unencrypted StorageClass), with the Ready condition's message.
-- Suspended: phase Quarantined (spec.quarantine: cut off and frozen on purpose), with the reason.
-- Progressing: no status yet, status for an older generation, or phase Progressing.
local health = {}

local status = obj.status
if status == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator to report status"
  return health
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return health
end

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
local message = ""
if ready ~= nil and ready.message ~= nil then
  message = ready.message
end

if ready ~= nil and ready.status == "True" then
  health.status = "Healthy"
  health.message = message
  return health
end

if status.phase == "Quarantined" then
  health.status = "Suspended"
  health.message = message
  return health
end

if status.phase == "Degraded" or status.phase == "Blocked" then
  health.status = "Degraded"
  health.message = status.phase
  if message ~= "" then
    health.message = status.phase .. ": " .. message
  end
  return health
end

health.status = "Progressing"
if message == "" then
  message = "Waiting for the model to become Ready"
end
health.message = message
return health
