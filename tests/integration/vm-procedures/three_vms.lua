-- Starts three VMs in parallel, runs a command on each, writes a rendered
-- config file on the first and reads it back through the agent.
local tasks = {}
for i = 1, 3 do
  tasks[i] = async(function(n)
    local vm = run_vm("small", {element = "web"})
    local r = run_agent_command(vm, "echo web-" .. n .. " on $CFM_VM")
    return {id = vm.id, ip = vm.private_ip, out = r.stdout, code = r.code}
  end, i)
end
local vms = wait(tasks)
local conf = render("{{#web}}server {{id}} {{ip}}:8080\n{{/web}}", {web = vms})
put_file(vms[1].id, "etc/lb/backends.conf", conf, {mode = "0644"})
local back = run_agent_command(vms[1].id, {"cat", "etc/lb/backends.conf"})
local slow = run_agent_command(vms[2].id, "sleep 30", {timeout = 1})
return {vms = vms, conf = back.stdout, slow_timed_out = slow.timed_out}
