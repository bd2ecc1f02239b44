-- failback: bring the system back to this site (the event's target_site,
-- its primary before a DR) once the site is back, in a short planned
-- outage: the serving site stops its entry points (no more writes), the
-- stateful elements start here from the serving site's data (sync_from),
-- the serving site releases the rest, roles swap back, the standby
-- replicas start at the other site on the volumes it holds, and the
-- stateful services here restart replicating to them before the rest of
-- the system starts here.
local S = require("system")
local t0 = cfm.now_ms()
local sys = cfm.system()
local from = sys.body.primary
if from == cfm.site then
  log("info", "%s already runs at %s: nothing to fail back", sys.id, cfm.site)
  return {noop = true}
end
local order = S.elements_in_order()
local function port(el)
  return el.body.service and el.body.service.health and el.body.service.health.port
end

-- 1. What is left here from before the disaster goes (its volumes go home).
for _, v in ipairs(cfm.objects("VMInstance", {site = cfm.site})) do
  if v.body.state ~= "terminated" and not pcall(terminate_vm, v.id) then
    v.body.state = "terminated" -- a rebuilt site's driver no longer knows it
    cfm.save(v)
  end
end
-- 2. The serving site stops taking requests: its entry points go.
for _, el in ipairs(order) do
  if el.body.address then S.at(from, "release_element", {element = el.id}) end
end
-- 3. Stateful elements start here from the serving site's data.
local stateful = {}
for _, el in ipairs(order) do
  if el.body.volumes and #el.body.volumes > 0 and el.body.placement ~= "standby" then
    local src = S.instances(el.id, from)[1]
    if not src then error(el.id .. " has no running instance at " .. from .. " to copy from") end
    S.ensure(el, el.body.count or 1, nil, {sync_from = src.vm.private_ip .. ":" .. port(el)})
    stateful[el.id] = true
  end
end
-- 4. The serving site releases the rest.
for _, el in ipairs(order) do
  if el.body.placement ~= "standby" and not el.body.address then
    S.at(from, "release_element", {element = el.id})
  end
end
-- 5. Roles swap back.
sys.body.primary, sys.body.standby = cfm.site, from
cfm.save(sys)
-- 6. The standby replicas start there, on the volumes that site holds.
for _, el in ipairs(order) do
  if el.body.placement == "standby" then S.deploy_at(el, from) end
end
-- 7. Stateful services here restart so they replicate to the new replicas.
for _, el in ipairs(order) do
  if stateful[el.id] then
    for _, x in ipairs(S.instances(el.id, cfm.site)) do S.restart_service(el, x.vm, x.inst.id) end
  end
end
-- 8. The rest starts here.
for _, el in ipairs(order) do
  if el.body.placement ~= "standby" and not stateful[el.id] then S.ensure(el, el.body.count or 1) end
end
local took = cfm.now_ms() - t0
log("info", "%s failed back to %s from %s in %d ms", sys.id, cfm.site, from, took)
publish_cloud_event(sys.id, "failback_completed", {site = cfm.site, from = from, took_ms = took})
return {site = cfm.site, from = from, took_ms = took}
