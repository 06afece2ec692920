-- Argo CD health of an AlertPipeline (resource.customizations.health.alertpipe.io_AlertPipeline).
-- Reads only status: observedGeneration and the conditions the operator writes (docs/operator.md).
-- Order matters: a spec the operator has not seen yet says nothing; an invalid spec is Degraded
-- whatever else holds; a kill switch is a deliberate stop (Suspended); a canary or a scale-up
-- waiting for pods is Progressing; Ready decides the rest.
local hs = {}

local function conditions(status)
  local by_type = {}
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type ~= nil then
        by_type[c.type] = c
      end
    end
  end
  return by_type
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the pipeline"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local c = conditions(status)
local ready = c["Ready"]

if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = text(ready, "the spec is invalid")
  return hs
end

local kill = c["KillSwitchActive"]
if kill ~= nil and kill.status == "True" then
  hs.status = "Suspended"
  hs.message = "Kill switch active: " .. text(kill, "see spec.killSwitches")
  return hs
end

local canary = c["Canary"]
if canary ~= nil and canary.status == "True" then
  if canary.reason == "WaitingForPromote" then
    hs.status = "Suspended"
    hs.message = "Canary waiting for promote: " .. text(canary, "")
  else
    hs.status = "Progressing"
    hs.message = "Canary " .. tostring(canary.reason) .. ": " .. text(canary, "")
  end
  return hs
end
if canary ~= nil and canary.status == "False" and (canary.reason == "RolledBack" or canary.reason == "Aborted") then
  hs.status = "Degraded"
  hs.message = "Canary " .. canary.reason .. ": " .. text(canary, "the candidate is not live")
  return hs
end

if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = text(ready, "Waiting for the Ready condition")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "the pipeline is ready")
  return hs
end

if ready.reason == "WaitingForReplicas" then
  local scaling = c["Scaling"]
  hs.status = "Progressing"
  if scaling ~= nil and (scaling.reason == "ScaledUp" or scaling.reason == "ScaledDown") then
    hs.message = scaling.reason .. ": " .. text(scaling, "") .. "; " .. text(ready, "")
  else
    hs.message = text(ready, "waiting for worker replicas")
  end
  return hs
end

hs.status = "Degraded"
hs.message = text(ready, tostring(ready.reason))
return hs
