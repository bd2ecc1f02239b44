-- scale_in: remove payload.count (default 1) instances of payload.element
-- (default "web"), never below its min: first those at other sites (the
-- scale-out overflow), newest first; the load balancer is re-rendered
-- before their VMs are terminated, so no request goes to a dying one.
local S = require("system")
local el = S.element(event.payload.element or "web")
if not el then error("no element " .. tostring(event.payload.element)) end
local all = S.instances(el.id)
local n = math.min(event.payload.count or 1, #all - (el.body.min or 0))
if n <= 0 then
  log("info", "%s has %d instance(s), min %d: nothing to remove", el.id, #all, el.body.min or 0)
  return {removed = 0}
end
table.sort(all, function(a, b)
  local fa, fb = a.inst.body.site ~= cfm.site, b.inst.body.site ~= cfm.site
  if fa ~= fb then return fa end
  return a.inst.version > b.inst.version
end)
local victims = {}
for i = 1, n do
  victims[i] = all[i]
  all[i].inst.body.state = "stopping"
  cfm.save(all[i].inst)
end
S.reconfigure(cfm.site)
local remote = {}
for _, x in ipairs(victims) do
  if x.inst.body.site == cfm.site then terminate_vm(x.vm.id)
  else remote[#remote + 1] = x.vm.id end
end
if #remote > 0 then
  publish_cloud_event(event.system, "terminate_vms", {vms = remote, target_site = victims[1].inst.body.site})
end
return {removed = n}
