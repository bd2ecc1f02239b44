-- async/wait: three tasks in parallel; in "fail" and "pcall" modes the
-- second one fails (the test looks up the line of the error() below);
-- "badwait" waits on something that is not a task of the run.
local function work(name, seconds, fail)
    sleep(seconds)
    if fail then
        error("boom in task") -- the failing line
    end
    return name
end

local mode = event.payload.mode
if mode == "badwait" then
    local t1 = async(work, "a", 0)
    return wait(t1, {task = 99}) -- waits on a task that is not one
end
if mode == "parallel" then
    local t1, t2, t3 = async(work, "a", 0.5), async(work, "b", 0.5), async(work, "c", 0.5)
    local r = wait({t1, t2, t3})
    return {names = r[1] .. r[2] .. r[3]}
end
local t1, t2, t3 = async(work, "a", 0.2), async(work, "b", 0.1, true), async(work, "c", 0.3)
if mode == "pcall" then
    local ok, err = pcall(wait, t1, t2, t3)
    return {ok = ok, err = err, third = wait(t3)}
end
wait(t1, t2, t3)
return "not reached"
