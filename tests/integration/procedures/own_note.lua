-- test_own_events.sh: sleeps event.payload.delay seconds (the test stops
-- the broker meanwhile), publishes a "note" and waits for that very note:
-- this site's own event, which must reach it without the broker.
local sys = event.system
sleep(event.payload.delay)
local id = publish_cloud_event(sys, "note", {n = event.payload.n})
local ev, why = wait_cloud_event(sys, "note", {match = {n = event.payload.n}, timeout = 30})
if not ev then
    error("own note not seen: " .. tostring(why))
end
return {published = id, got = ev.id, origin = ev.origin}
