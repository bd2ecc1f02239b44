-- Escape: the debug library (sethook would lift the instruction budget).
debug.sethook() -- escape
return "unhooked"
