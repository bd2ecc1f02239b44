-- Escape: rawset into a shared library table.
rawset(string, "format", nil) -- escape
return "changed"
