-- A syntax error on line 3: system load and procedure check must name it.
local x = 1
local y = = x
return y
