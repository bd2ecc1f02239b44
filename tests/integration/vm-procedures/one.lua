local vm = run_vm("small", {element = "db"})
attach_volume(vm, "data")
associate_address(vm, "public")
local r = run_agent_command(vm, "ls volumes")
return {id = vm.id, volumes = r.stdout}
