-- deploy_element: start one element's instances here, for a run at
-- another site (deploy.lua, dr.lua) that waits for element_deployed.
local S = require("system")
local el = S.element(event.payload.element)
local ok, err = pcall(function()
  if not el then error("no element " .. tostring(event.payload.element)) end
  S.ensure(el, event.payload.count or el.body.count or 1)
end)
publish_cloud_event(event.system, "element_deployed",
                    {request = event.id, element = event.payload.element, site = cfm.site,
                     error = (not ok) and tostring(err) or nil})
if not ok then error(err) end
