-- Ask the operator to reconcile this PhoneNumber now: a fresh token in
-- oneinbox.ai/reconcile-requested-at (echoed in status.lastHandledReconcileAt once handled).
-- The token is the UTC time; a second request within the same second gets a ".1" suffix so
-- that the value always changes.
local os = require("os")
local key = "oneinbox.ai/reconcile-requested-at"
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local token = os.date("!%Y-%m-%dT%XZ")
if obj.metadata.annotations[key] == token then
  token = token .. ".1"
end
obj.metadata.annotations[key] = token
return obj
