-- Argo CD health of an AlertRule (resource.customizations.health.alertpipe.io_AlertRule).
-- Degraded with the compiler's message while the rule does not compile (it is left out; the other
-- rules keep running); Progressing until every pipeline that selects it runs it; Healthy then.
local hs = {}

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the rule"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate generation " .. tostring(generation)
  return hs
end

local valid = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Valid" then
      valid = c
    end
  end
end

if valid == nil or valid.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Valid condition"
  return hs
end

if valid.status == "False" then
  hs.status = "Degraded"
  hs.message = valid.message or valid.reason
  return hs
end

local live = {}
if status.live ~= nil then
  for _, l in ipairs(status.live) do
    live[l.pipeline] = l.revision
  end
end
local waiting = {}
local running = {}
if status.pipelines ~= nil then
  for _, p in ipairs(status.pipelines) do
    if live[p] == nil then
      table.insert(waiting, p)
    else
      table.insert(running, p .. "@" .. live[p])
    end
  end
end

if #waiting > 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for pipeline(s) " .. table.concat(waiting, ", ") .. " to load the rule"
  return hs
end

hs.status = "Healthy"
if #running > 0 then
  hs.message = "Live in " .. table.concat(running, ", ")
else
  hs.message = valid.message or "compiles"
end
return hs
