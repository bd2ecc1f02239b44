-- Escape: ask load for binary mode.
local fn = load("return 1", "=chunk", "b") -- escape
return fn()
