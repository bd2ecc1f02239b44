-- Escape: strip the read-only metatable of a shared library.
setmetatable(string, nil) -- escape
string.format = nil
return "changed"
