-- dr: recover the whole system here (the event's target_site) from the
-- replicated model, while the primary is gone. The standby replica is
-- stopped to release the volume it kept in sync, every element placed at
-- the primary is started here with the same counts (VM classes take this
-- site's overrides), the system's primary and standby swap, and
-- dr_completed reports the recovery time.
local S = require("system")
local t0 = cfm.now_ms()
local sys = cfm.system()
local old = sys.body.primary
if old == cfm.site then
  log("warn", "%s already runs at %s: nothing to recover", sys.id, cfm.site)
  return {noop = true}
end

-- 1. The standby replicas here hold the data: stop them to free their volumes.
for _, el in ipairs(S.elements_in_order()) do
  if el.body.placement == "standby" then
    for _, x in ipairs(S.instances(el.id, cfm.site)) do
      log("info", "stopping replica %s to take over its volumes", x.inst.id)
      terminate_vm(x.vm.id)
    end
  end
end
-- 2. The lost site's instances are lost.
for _, v in ipairs(cfm.objects("VMInstance", {site = old})) do
  if v.body.state == "running" or v.body.state == "starting" then
    v.body.state = "lost"
    cfm.save(v)
  end
end
for _, i in ipairs(cfm.objects("BusinessSystemElementInstance", {site = old})) do
  if i.body.state == "running" then i.body.state = "lost"; cfm.save(i) end
end
-- 3. Everything placed at the primary starts here, in order.
for _, el in ipairs(S.elements_in_order()) do
  if el.body.placement ~= "standby" then S.ensure(el, el.body.count or 1) end
end
-- 4. This site is the primary now; the old one becomes the standby.
sys.body.primary, sys.body.standby = cfm.site, old
cfm.save(sys)
local rto = cfm.now_ms() - t0
log("info", "%s recovered at %s in %d ms", sys.id, cfm.site, rto)
publish_cloud_event(sys.id, "dr_completed", {site = cfm.site, from = old, rto_ms = rto})
return {site = cfm.site, rto_ms = rto}
