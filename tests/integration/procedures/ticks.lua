-- test_run_records.sh: a monitoring loop's shape: waits for "tick" events
-- one after the other, each time for the same thing, until one says last.
local n = 0
while true do
  local ev, why = wait_cloud_event(event.system, "tick", {timeout = 30})
  if not ev then error("no tick: " .. tostring(why)) end
  n = n + 1
  if ev.payload.last then return {ticks = n} end
end
