-- Escape: drive the collector of the shared Lua state.
collectgarbage("stop") -- escape
return "stopped"
