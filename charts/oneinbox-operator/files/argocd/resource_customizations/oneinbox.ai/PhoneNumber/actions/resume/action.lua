-- Resume the operator for this PhoneNumber: remove oneinbox.ai/paused.
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["oneinbox.ai/paused"] = nil
  -- An emptied table would be encoded as [] and Argo CD would then keep the old annotations
  -- (it restores maps that come back as empty arrays); drop the field instead.
  if next(obj.metadata.annotations) == nil then
    obj.metadata.annotations = nil
  end
end
return obj
