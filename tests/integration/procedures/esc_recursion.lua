-- Escape: recurse until the C stack of the manager breaks.
local function deeper(n)
    return deeper(n + 1) + 1 -- escape
end
return deeper(1)
