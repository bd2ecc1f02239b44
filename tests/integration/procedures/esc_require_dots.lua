-- Escape: require a module outside procedures/lib.
return require("..x") -- escape
