-- test_wait_match.sh: each wait returns the one "probe" event whose payload
-- holds every field of its match; the decoys published before it share the
-- waiter's index bucket (same tag, or a value with the same index text) and
-- must be passed over. Numbers compare by value (2 matches 2.0), anything
-- else by JSON equality (the string "2" is not 2, false is not 0).
local got = {}
local function take(match)
    local ev, why = wait_cloud_event(event.system, "probe", {match = match, timeout = 20})
    got[#got + 1] = ev and ev.id or ("none: " .. tostring(why))
end
take({tag = "t1", n = 2})
take({tag = "t2", x = 1.5})
take({tag = "t3", s = "b"})
take({tag = "t4", flag = false})
take({tag = "t5", obj = {a = {1, 2}}})
take({tag = "t6", z = cfm.null})
take({tag = "t7"})
return {got = got}
