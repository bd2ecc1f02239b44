-- Escape: never give the loop back.
while true do end -- escape
