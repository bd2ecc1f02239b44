-- Escape: load a (hand-made) binary chunk; bytecode is not verified by Lua.
local chunk = "\27LuaT\0\25\147\r\n\26\n" .. string.rep("\0", 40)
local fn = assert(load(chunk)) -- escape
return fn()
