-- Reports where it ran (run_at selection and dedup tests).
return {site = cfm.site, type = event.type, n = event.payload.n}
