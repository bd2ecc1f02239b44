-- Starts three VMs in parallel, runs a command on each, writes a rendered
-- config file on the first and reads it back through the agent, starts a
-- service on the third and checks it with http_get.
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
-- A real service on the third VM, checked from the VM by its agent (http_get).
local web = "http://" .. vms[3].ip .. ":8080"
local svc = run_agent_command(vms[3].id, "nohup " .. cfm.bin_dir .. "/cfm-svc web --listen " ..
                              vms[3].ip .. ":8080 --name web-3 --watch $PPID >web.log 2>&1 &")
assert(svc.code == 0, svc.stderr)
-- retry_for: the agent tries again until the service just started answers.
local health = http_get(vms[3], web .. "/health?instance=web-3", {retry_for = 30})
local bad_ok, bad_retry = pcall(http_get, vms[3], web, {retry_for = -1})
local other = http_get(vms[3].id, web .. "/health?instance=web-9", {timeout = 1, max_body = 4})
local refused = http_get(vms[3], "http://" .. vms[3].ip .. ":8081/")
return {vms = vms, conf = back.stdout, slow_timed_out = slow.timed_out,
        health = {status = health.status, body = health.body},
        tries = health.attempts, bad_retry = not bad_ok and bad_retry,
        other = {status = other.status, body = other.body, cut = other.body_truncated},
        refused = {status = refused.status, error = refused.error}}
