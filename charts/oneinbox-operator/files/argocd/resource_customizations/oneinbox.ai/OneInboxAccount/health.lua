-- Argo CD health check for oneinbox.ai/OneInboxAccount and oneinbox.ai/ClusterOneInboxAccount
-- (the same file in both kind directories; tests/argocd fails when they differ).
--
-- Reads the account's status: observedGeneration, phoneNumbers and the Ready / Reconciling /
-- Stalled conditions (Reconciling and Stalled are present only while True). Uses only Lua's base
-- and table libraries, which is all Argo CD gives a health script configured in argocd-cm.
--
--   no status, or observedGeneration < generation -> Progressing
--   no conditions                                 -> Progressing
--   Stalled=True (key or endpoint problem)        -> Degraded
--   Reconciling=True (APIUnavailable, InUse)      -> Progressing
--   Ready=True (Verified)                         -> Healthy
--   Ready False/Unknown                           -> Progressing

local function findCondition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- "Reason: message", falling back to the given text when the condition says nothing.
local function describe(c, fallback)
  local text = c.message
  if text == nil or text == "" then
    text = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

local function result(status, message)
  return { status = status, message = message }
end

local metadata = obj.metadata or {}
local status = obj.status
if status == nil then
  return result("Progressing", "Waiting for the operator to report status")
end

-- Also after deletion starts: the API server bumps the generation of an object with finalizers.
local generation = metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  local seen = "none"
  if observed ~= nil then
    seen = tostring(observed)
  end
  return result("Progressing", "Waiting for the operator to observe generation "
    .. tostring(generation) .. " (observed: " .. seen .. ")")
end

local conditions = status.conditions
local ready = findCondition(conditions, "Ready")
local reconciling = findCondition(conditions, "Reconciling")
local stalled = findCondition(conditions, "Stalled")

-- A broken key stays Degraded while deletion waits: PhoneNumbers being deleted still need it.
if isTrue(stalled) then
  return result("Degraded", describe(stalled, "The account needs a fix"))
end

-- InUse (deletion waits for the account's PhoneNumbers) comes before Ready, which keeps its
-- value while the account is being deleted.
if isTrue(reconciling) then
  return result("Progressing", describe(reconciling, "The operator is checking the account"))
end

if isTrue(ready) then
  local message = describe(ready, "The API key was accepted by OneInbox")
  if status.phoneNumbers ~= nil then
    message = message .. "; " .. tostring(status.phoneNumbers) .. " PhoneNumber(s) use the account"
  end
  return result("Healthy", message)
end

if ready ~= nil then
  return result("Progressing", describe(ready, "The account is not ready yet"))
end

return result("Progressing", "Waiting for the operator to check the API key")
