-- At site B: wait for A's question (matched by token) and answer it.
local util = require("util")
local q, why = wait_cloud_event(event.system, "question",
                                {match = {token = event.payload.token}, timeout = 30})
if not q then
    error("no question from A: " .. tostring(why))
end
publish_cloud_event(event.system, "answer",
                    {token = q.payload.token, answer = util.answer(q.payload.text)})
return {answered = q.payload.text}
