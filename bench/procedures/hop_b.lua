-- event_hop, site B (bench/bench_event_hop.sh): answers COUNT pings of the
-- run of hop_a.lua at site A, each ping {n = i} with pong {n = i}.
local sys, count = event.system, event.payload.count
local t0
for i = 1, count do
  local ev, why = wait_cloud_event(sys, "ping", {match = {n = i}, timeout = 30})
  if not ev then error(string.format("no ping %d: %s", i, tostring(why))) end
  t0 = t0 or cfm.now_ms()
  publish_cloud_event(sys, "pong", {n = i})
end
return {count = count, ms = cfm.now_ms() - t0}
