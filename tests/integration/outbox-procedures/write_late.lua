-- Waits for the test's go, announces it in the log, gives the test time to
-- freeze the broker, then writes one object: its message cannot be
-- acknowledged, so it stays in the outbox.
wait_cloud_event(event.system, "go", {timeout = 60})
log("info", "got go; writing in 2 s")
sleep(2)
cfm.save({kind = "Address", id = "written-late", body = {pool = "public", description = "outbox"}})
return "saved"
