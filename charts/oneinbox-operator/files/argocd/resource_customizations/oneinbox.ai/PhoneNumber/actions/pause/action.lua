-- Pause the operator for this PhoneNumber: no OneInbox calls until resumed.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["oneinbox.ai/paused"] = "true"
return obj
