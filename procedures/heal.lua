-- heal: replace an instance whose VM failed (vm_failed, published by the
-- site that lost the VM; bound with run_at "origin", so that site heals).
-- The failed VM is terminated first, releasing its volumes and address, so
-- the replacement takes them over with their data.
local S = require("system")
local p = event.payload
if not p.element then
  log("info", "VM %s served no element: nothing to heal", tostring(p.vm))
  return {healed = false}
end
local el = S.element(p.element)
if not el then error("no element " .. p.element) end
terminate_vm(p.vm)
-- Only where the element belongs now (after DR the old primary's VMs are
-- lost, not to be replaced there; a scale-out overflow is not re-created).
local home = S.home(el)
if home ~= cfm.site then
  log("info", "%s belongs at %s now: %s released, not replaced here", el.id, tostring(home), p.vm)
  return {healed = false, released = p.vm}
end
local want = #S.instances(el.id, cfm.site) + 1
S.ensure(el, want)
-- Whoever renders a list of instances (the lb) gets the new one.
local sys = cfm.system()
if sys.body.primary == cfm.site then S.reconfigure(cfm.site) end
publish_cloud_event(event.system, "healed", {element = el.id, failed_vm = p.vm, site = cfm.site})
return {healed = true, element = el.id}
