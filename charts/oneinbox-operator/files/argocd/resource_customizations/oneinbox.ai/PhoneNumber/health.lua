-- Argo CD health check for oneinbox.ai/PhoneNumber.
--
-- Reads the operator's status contract: status.observedGeneration and the Ready / Reconciling /
-- Stalled conditions (metav1.Condition; Reconciling and Stalled are present only while True),
-- plus the oneinbox.ai/paused annotation. Uses only Lua's base and table libraries, which is all
-- Argo CD gives a health script configured in argocd-cm (unless useOpenLibs is set).
--
--   deleting, Stalled DeletionBlocked             -> Degraded
--   deleting, paused                              -> Suspended
--   deleting                                      -> Progressing
--   oneinbox.ai/paused: "true"                    -> Suspended
--   no status, or observedGeneration < generation -> Progressing
--   Ready reason Paused, annotation removed       -> Progressing (resuming)
--   Stalled=True (incl. ReplacementRequired)      -> Degraded
--   Ready=True (also Observed, with Drifted=True)  -> Healthy
--   Reconciling=True, Ready False/Unknown         -> Progressing
--   no conditions                                 -> Progressing

local PAUSED_ANNOTATION = "oneinbox.ai/paused"

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
  if c == nil then
    return fallback
  end
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
local annotations = metadata.annotations or {}
local paused = annotations[PAUSED_ANNOTATION] == "true"
local status = obj.status
local conditions = nil
if status ~= nil then
  conditions = status.conditions
end
local ready = findCondition(conditions, "Ready")
local reconciling = findCondition(conditions, "Reconciling")
local stalled = findCondition(conditions, "Stalled")
local drifted = findCondition(conditions, "Drifted")

-- Deletion. (Older Argo CD releases report every terminating object as Progressing "Pending
-- deletion" without running this script; releases with custom deletion messages run it and show
-- its message, keeping the status Progressing.)
if metadata.deletionTimestamp ~= nil then
  local policy = "Delete"
  if obj.spec ~= nil and obj.spec.deletionPolicy ~= nil then
    policy = obj.spec.deletionPolicy
  end
  if isTrue(stalled) and stalled.reason == "DeletionBlocked" then
    return result("Degraded", describe(stalled, "OneInbox refused to deregister the number")
      .. " (set spec.deletionPolicy: Orphan to let the object go and keep the registration)")
  end
  if paused then
    return result("Suspended", "Deletion is paused by the " .. PAUSED_ANNOTATION
      .. " annotation; remove it to let the operator finish (deletionPolicy " .. policy .. ")")
  end
  if ready ~= nil and ready.reason == "Deleting" then
    return result("Progressing", describe(ready, "Deleting") .. " (deletionPolicy " .. policy .. ")")
  end
  return result("Progressing", "Deleting: waiting for the operator (deletionPolicy " .. policy .. ")")
end

if paused then
  if ready ~= nil and ready.reason == "Paused" then
    return result("Suspended", describe(ready, "Reconciliation is paused"))
  end
  return result("Suspended", "Paused by the " .. PAUSED_ANNOTATION
    .. " annotation: the operator makes no OneInbox calls for this number")
end

if status == nil then
  return result("Progressing", "Waiting for the operator to report status")
end

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

if ready ~= nil and ready.reason == "Paused" then
  return result("Progressing", "Resuming: the " .. PAUSED_ANNOTATION
    .. " annotation was removed; waiting for the operator")
end

if isTrue(stalled) then
  if isTrue(ready) then
    -- ReplacementRequired: the number works, but a human has to decide; Degraded makes it visible.
    return result("Degraded", "The number is registered and still works, but a decision is needed. "
      .. describe(stalled, "See the Stalled condition"))
  end
  return result("Degraded", describe(stalled, "The operator needs a human decision"))
end

if isTrue(ready) then
  local message = describe(ready, "The number is registered and active")
  if isTrue(drifted) then
    -- managementPolicy: Observe reports drift without correcting it. The number works as it is
    -- registered, so it stays Healthy; the message names the fields that differ.
    message = message .. ". " .. describe(drifted, "The registration differs from the spec")
  end
  return result("Healthy", message)
end

if isTrue(reconciling) then
  return result("Progressing", describe(reconciling, "The operator is working on the number"))
end

if ready ~= nil then
  return result("Progressing", describe(ready, "The number is not ready yet"))
end

return result("Progressing", "Waiting for the operator")
