-- Escape: reach the shared library table through pairs() and change it.
local n = 0
for _ in pairs(string) do n = n + 1 end
assert(n > 10, "pairs(string) should list the string library")
local _, lib = pairs(string)
lib.format = nil -- escape
return "changed"
