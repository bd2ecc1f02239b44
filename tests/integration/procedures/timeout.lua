-- wait_cloud_event with a timeout and no such event: nil, "timeout".
local ev, why = wait_cloud_event(event.system, "never", {timeout = 0.3})
return {got_event = ev ~= nil, why = why}
