-- event_hop, site A (bench/bench_event_hop.sh): COUNT round trips with the
-- run of hop_b.lua at site B. Each: publish ping {n = i}, wait for pong
-- {n = i}. cfm.now_ms() has millisecond resolution, so the run times all
-- round trips together; the per-hop figures come from a watcher on the
-- broker (cfm-bench-raw hops), which sees every ping and pong arrive.
local sys, count = event.system, event.payload.count
local t0 = cfm.now_ms()
for i = 1, count do
  publish_cloud_event(sys, "ping", {n = i})
  local ev, why = wait_cloud_event(sys, "pong", {match = {n = i}, timeout = 30})
  if not ev then error(string.format("no pong %d: %s", i, tostring(why))) end
end
return {count = count, ms = cfm.now_ms() - t0}
