-- Escape: run a file of the host.
return dofile("/etc/passwd") -- escape
