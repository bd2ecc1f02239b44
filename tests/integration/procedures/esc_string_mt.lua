-- Escape: replace the methods of every string (("x"):upper() in other runs).
getmetatable("").__index = {} -- escape
return "changed"
