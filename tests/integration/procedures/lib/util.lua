-- A module for require("util"): procedures share helpers through lib/.
local M = {}

function M.answer(text)
    return string.format("pong from %s: %s", cfm.site, text)
end

return M
