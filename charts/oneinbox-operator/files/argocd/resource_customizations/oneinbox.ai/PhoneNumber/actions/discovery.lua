-- Argo CD action discovery for oneinbox.ai/PhoneNumber.
-- reconcile-now and pause are offered while the object is not paused, resume only while it is.
local actions = {}

local paused = false
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  paused = obj.metadata.annotations["oneinbox.ai/paused"] == "true"
end

actions["reconcile-now"] = {
  ["disabled"] = paused,
  ["iconClass"] = "fa fa-fw fa-sync",
  ["displayName"] = "Reconcile now"
}
actions["pause"] = {
  ["disabled"] = paused,
  ["iconClass"] = "fa fa-fw fa-pause-circle",
  ["displayName"] = "Pause (no OneInbox calls)"
}
actions["resume"] = {
  ["disabled"] = not paused,
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["displayName"] = "Resume"
}

return actions
