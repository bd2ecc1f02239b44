-- Escape: change cfm.site (and so the API) for the runs after this one.
cfm.site = "site-evil" -- escape
return cfm.site
