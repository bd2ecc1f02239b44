-- Escape: run a command on the host.
return os.execute("touch /tmp/cfm-escaped") -- escape
