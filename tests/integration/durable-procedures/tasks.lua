-- Three tasks that share one table and sleep for different times, so their
-- steps interleave; the trace records the order. A replay that resumed the
-- tasks in another order would meet a sleep of another length at that call
-- number and fail as diverged, so a replayed run that succeeds went the
-- way the first execution went.
local trace = {}
local keys = {zeta = 1, alpha = 2, mid = 3, [10] = 4, [2] = 5}
for k in pairs(keys) do trace[#trace + 1] = tostring(k) end
local tasks = {}
for i = 1, 3 do
  tasks[i] = async(function()
    for j = 1, 2 do
      sleep(0.07 * i)
      trace[#trace + 1] = "t" .. i .. "." .. j
    end
    return i
  end)
end
local done = wait(tasks)
trace[#trace + 1] = "r" .. math.random(1000000)
local id = publish_cloud_event(event.system, "traced", {steps = #trace})
return {trace = table.concat(trace, ","), done = #done, event_id = id}
