-- A normal procedure that relies on what the escapes tried to break.
local n = 0
for _ in pairs(string) do n = n + 1 end
return {text = string.format("%s-%d", cfm.site, 7), upper = ("abc"):upper(), site = cfm.site,
        string_fns = n, util = require("util").answer("hi")}
