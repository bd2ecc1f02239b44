-- Waits (up to 10 minutes) for one "release" event of its system.
local ev, why = wait_cloud_event(event.system, "release", {timeout = 600})
if not ev then
    error("not released: " .. tostring(why))
end
return {n = event.payload.n}
