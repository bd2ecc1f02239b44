-- release_element: terminate every instance of payload.element at this
-- site (for a run at another site, e.g. failback, that waits for
-- release_element_done).
local S = require("system")
local n = 0
local ok, err = pcall(function()
  for _, x in ipairs(S.instances(event.payload.element, cfm.site)) do
    terminate_vm(x.vm.id)
    n = n + 1
  end
end)
publish_cloud_event(event.system, "release_element_done",
                    {request = event.id, element = event.payload.element, site = cfm.site,
                     released = n, error = (not ok) and tostring(err) or nil})
if not ok then error(err) end
return {released = n}
