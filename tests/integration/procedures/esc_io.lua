-- Escape: read a file of the host.
local f = io.open("/etc/passwd") -- escape
return f:read("a")
