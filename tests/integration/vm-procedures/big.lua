return run_vm("big")
