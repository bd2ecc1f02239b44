-- dr: recover the whole system here (the event's target_site) from the
-- replicated model, while the primary is gone. What runs here is released
-- (the standby replica's volume holds the synced data), every element placed at
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

-- 1. Everything already here is released: the standby replicas hold the
--    data (stopping them frees their volumes for the recovered elements),
--    and instances from a scale-out were configured against the lost site.
--    The releases run while the new VMs boot: a volume or an address is
--    attached once they are done.
local released = {}
for _, el in ipairs(S.elements_in_order()) do
  for _, x in ipairs(S.instances(el.id, cfm.site)) do
    log("info", "releasing %s (%s)", x.inst.id,
        el.body.placement == "standby" and "its volumes hold the data" or "configured for " .. old)
    released[#released + 1] = async(terminate_vm, x.vm.id)
  end
end
-- 2. The lost site's instances are lost: marked while the VMs boot, before
--    any instance here is configured (templates list running instances).
local function mark_lost()
  for _, v in ipairs(cfm.objects("VMInstance", {site = old})) do
    if v.body.state == "running" or v.body.state == "starting" then
      v.body.state = "lost"
      cfm.save(v)
    end
  end
  for _, i in ipairs(cfm.objects("BusinessSystemElementInstance", {site = old})) do
    if i.body.state == "running" then i.body.state = "lost"; cfm.save(i) end
  end
end
-- 3. Everything placed at the primary starts here: every VM at once, each
--    element's services once those it depends on answer. A recovery
--    that cannot complete (e.g. this site lacks capacity) stops what it
--    started, so nothing half-started is left running, and says why.
local started, plan = {}, {}
for _, el in ipairs(S.elements_in_order()) do
  -- have = 0: what runs here now is being released (step 1).
  if el.body.placement ~= "standby" then
    plan[#plan + 1] = {el = el, count = el.body.count or 1, have = 0}
  end
end
local ok, err = pcall(function()
  S.ensure_all(plan, started, nil, {release = released, meanwhile = mark_lost})
  if #released > 0 then wait(released) end
end)
if not ok then
  for _, id in ipairs(started) do pcall(terminate_vm, id) end
  publish_cloud_event(sys.id, "dr_failed", {site = cfm.site, from = old, error = tostring(err)})
  error("recovery of " .. sys.id .. " at " .. cfm.site .. " failed: " .. tostring(err), 0)
end
-- 4. This site is the primary now; the old one becomes the standby.
sys.body.primary, sys.body.standby = cfm.site, old
cfm.save(sys)
local rto = cfm.now_ms() - t0
log("info", "%s recovered at %s in %d ms", sys.id, cfm.site, rto)
publish_cloud_event(sys.id, "dr_completed", {site = cfm.site, from = old, rto_ms = rto})
return {site = cfm.site, rto_ms = rto}
