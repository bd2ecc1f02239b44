-- Escape: require a path that climbs out of procedures/lib.
return require("x/../../etc") -- escape
