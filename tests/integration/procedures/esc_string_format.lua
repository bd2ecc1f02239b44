-- Escape: change a library every run shares.
string.format = nil -- escape
return "changed"
