-- Waits for "go" with this run's token (payload.timeout, default 60 s),
-- then sleeps payload.sleep seconds; reports what it got and how long the
-- whole run took by the wall clock (cfm.now_ms is journaled: a replay sees
-- the first execution's start).
local t0 = cfm.now_ms()
local ev, why = wait_cloud_event(event.system, "go",
                                 {match = {token = event.payload.token},
                                  timeout = event.payload.timeout or 60})
if event.payload.sleep then sleep(event.payload.sleep) end
return {got = ev and ev.id or cfm.null, why = why or cfm.null, elapsed_ms = cfm.now_ms() - t0}
