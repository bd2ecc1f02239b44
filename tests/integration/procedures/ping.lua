-- At site A: ask site B (event "ask" starts pong.lua there), send it the
-- question, and wait for B's answer; the answer becomes this run's result.
local token = event.payload.token
publish_cloud_event(event.system, "ask", {token = token})
publish_cloud_event(event.system, "question", {token = token, text = event.payload.text})
local ans, why = wait_cloud_event(event.system, "answer", {match = {token = token}, timeout = 30})
if not ans then
    error("no answer from B: " .. tostring(why))
end
log("info", "answer from %s: %s", ans.origin, ans.payload.answer)
return {answer = ans.payload.answer, from = ans.origin, token = token}
