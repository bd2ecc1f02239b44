-- bench/bench_waiting.sh: waits for the "release" event carrying this
-- run's number, then says so with a "resumed" event carrying it too.
local n = event.payload.n
local ev, why = wait_cloud_event(event.system, "release", {match = {n = n}, timeout = 600})
if not ev then error(string.format("run %d not released: %s", n, tostring(why))) end
publish_cloud_event(event.system, "resumed", {n = n})
return {n = n}
