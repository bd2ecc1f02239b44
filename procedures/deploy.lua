-- deploy: start every element of the system, in dependency order (db,
-- then web, then lb), the instances of one element in parallel. Elements
-- placed at another site (a standby replica) are deployed there by a run
-- of deploy_element.lua, which this run waits for.
local S = require("system")
local sys = cfm.system()
local started = 0
for _, el in ipairs(S.elements_in_order()) do
  local home = S.home(el, sys)
  if home == cfm.site then
    started = started + S.ensure(el, el.body.count or 1)
  elseif home then
    log("info", "%s belongs at %s: asking it", el.id, home)
    S.deploy_at(el, home)
  end
end
log("info", "deployed %s at %s: %d new instance(s)", sys.id, cfm.site, started)
publish_cloud_event(sys.id, "deployed", {site = cfm.site, started = started})
return {started = started}
