-- Escape: eat the manager's memory.
local t = {}
for i = 1, 100000 do
    t[i] = string.rep("x", 1 << 20) .. i -- escape
end
return #t
