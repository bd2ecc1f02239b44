-- scale_out: add payload.count (default 1) instances of payload.element
-- (default "web"): here while this site has capacity, the rest at the
-- standby site (a deploy_element run there, awaited here); then the
-- primary's load balancer is re-rendered with every instance.
local S = require("system")
local sys = cfm.system()
local el = S.element(event.payload.element or "web")
if not el then error("no element " .. tostring(event.payload.element)) end
local want = event.payload.count or 1
local tasks = {}
for i = 1, want do
  tasks[i] = async(function() local ok, err = pcall(S.start_instance, el); return ok or err end)
end
local here, full = 0, 0
for _, r in ipairs(wait(tasks)) do
  if r == true then here = here + 1
  elseif tostring(r):find("no capacity", 1, true) then full = full + 1
  else error(r) end
end
local there = 0
if full > 0 then
  local other = sys.body.standby
  if not other then error(string.format("%d instance(s) did not fit at %s and there is no standby", full, cfm.site)) end
  log("info", "%s is full: %d instance(s) of %s go to %s", cfm.site, full, el.id, other)
  local have = #S.instances(el.id, other)
  local req = publish_cloud_event(sys.id, "deploy_element",
                                  {element = el.id, target_site = other, count = have + full})
  local ev, err = wait_cloud_event(sys.id, "element_deployed", {match = {request = req}, timeout = 300})
  if not ev then error("scale-out at " .. other .. ": " .. err) end
  if ev.payload.error then error("scale-out at " .. other .. ": " .. ev.payload.error) end
  there = full
end
S.reconfigure(cfm.site)
publish_cloud_event(sys.id, "scaled_out", {element = el.id, here = here, there = there})
return {element = el.id, here = here, there = there}
