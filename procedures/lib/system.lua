-- lib/system.lua: what the standard procedures share. A system owner's own
-- procedures can require("system") too.
--
-- An element instance is a BusinessSystemElementInstance object naming its
-- element and VM; run_vm creates it when given {element = ...}. Services
-- are started with the element's service.start command, rendered with the
-- vars below, and checked with service.health through the VM's agent.
local M = {}

-- The system's elements, each after the elements it depends on.
function M.elements_in_order()
  local els = cfm.objects("BusinessSystemElement")
  local byid, order, seen = {}, {}, {}
  for _, e in ipairs(els) do byid[e.id] = e end
  local function visit(e)
    if seen[e.id] then return end
    seen[e.id] = true
    for _, d in ipairs(e.body.depends_on or {}) do visit(byid[d]) end
    order[#order + 1] = e
  end
  for _, e in ipairs(els) do visit(e) end
  return order
end

function M.element(id)
  for _, e in ipairs(cfm.objects("BusinessSystemElement")) do
    if e.id == id then return e end
  end
end

function M.vm(id)
  for _, v in ipairs(cfm.objects("VMInstance")) do
    if v.id == id then return v end
  end
end

-- The site an element belongs at: its placement names the system's
-- primary (default) or standby.
function M.home(el, sys)
  sys = sys or cfm.system()
  if el.body.placement == "standby" then return sys.body.standby end
  return sys.body.primary
end

-- A VM as the API calls take it: {id, private_ip, public_ip, site}.
local function flat(v)
  return {id = v.id, private_ip = v.body.private_ip, public_ip = v.body.public_ip,
          site = v.body.site}
end

-- Every VMInstance of the system by id (read once per call that needs many).
function M.vms_by_id()
  local map = {}
  for _, v in ipairs(cfm.objects("VMInstance")) do map[v.id] = v end
  return map
end

-- Running instances of an element ({inst, vm} pairs), at one site or all.
-- vms (from vms_by_id) saves reading every VM again when called in a loop.
function M.instances(element_id, site, vms)
  local out = {}
  vms = vms or M.vms_by_id()
  for _, inst in ipairs(cfm.objects("BusinessSystemElementInstance", {element = element_id})) do
    if inst.body.state == "running" and (not site or inst.body.site == site) then
      local vm = vms[inst.body.vm]
      if vm and vm.body.state == "running" then out[#out + 1] = {inst = inst, vm = flat(vm)} end
    end
  end
  return out
end

-- Where an instance's service listens: the public address when it has one.
local function host_of(vm)
  return vm.public_ip or vm.private_ip
end

-- The one instance of a list that <element>_address names: the first at
-- the site of the VM being configured, else the first at the primary, else
-- the first (the first in ID order alone would be an accident). While an
-- element runs at two sites (failback starts the db here before the old
-- site lets go of its own) a web started here so gets the db started here.
local function nearest(list, site, primary)
  for _, want in ipairs({site, primary}) do
    for _, x in ipairs(list) do
      if x.site == want then return x end
    end
  end
  return list[1]
end

-- Every element's live instances, for template variables: read once when
-- many instances are configured together (ensure_all), since reading them
-- costs a read of every VM and instance of the system (and its journal
-- entry) -- per instance, that grew with the square of the system's size.
function M.instance_lists()
  local vms = M.vms_by_id()
  local sys = cfm.system()
  local out = {primary = sys and sys.body.primary, elements = {}}
  for _, e in ipairs(cfm.objects("BusinessSystemElement")) do
    local list = {}
    for _, x in ipairs(M.instances(e.id, nil, vms)) do
      list[#list + 1] = {name = x.inst.id, address = x.vm.private_ip, site = x.inst.body.site}
    end
    local port = e.body.service and e.body.service.health and e.body.service.health.port
    out.elements[#out.elements + 1] = {key = e.id:gsub("[^%w]", "_"), list = list, port = port}
  end
  return out
end

-- Template variables: this instance, every element's live instances (from
-- lists, an instance_lists(), or read now), and the caller's extra ones
-- (e.g. sync_from for a db starting from another).
function M.vars(vm, name, extra, lists)
  local v = {bin = cfm.bin_dir, ip = vm.private_ip, public_ip = vm.public_ip,
             name = name, site = cfm.site, system = event.system}
  for k, x in pairs(extra or {}) do v[k] = x end
  lists = lists or M.instance_lists()
  for _, e in ipairs(lists.elements) do
    v[e.key] = e.list
    if e.list[1] and e.port and v[e.key .. "_address"] == nil then
      local one = nearest(e.list, vm.site or cfm.site, lists.primary)
      v[e.key .. "_address"] = one.address .. ":" .. e.port
    end
  end
  return v
end

-- Renders the element's config templates onto the VM.
function M.configure(el, vm, name, lists)
  for _, tid in ipairs(el.body.config_templates or {}) do
    for _, t in ipairs(cfm.objects("ConfigTemplate")) do
      if t.id == tid then
        lists = lists or M.instance_lists()
        put_file(vm, t.body.path, render(t.body.template, M.vars(vm, name, nil, lists)),
                 {mode = t.body.mode})
      end
    end
  end
end

-- Waits until the service answers its health check: an HTTP GET made by
-- the VM's agent (http_get), so the check sees what the VM sees, and no
-- process is started for it.
-- With name (the instance's name, given to the service as --name) the check
-- asks for that instance (?instance=NAME): a service that knows the
-- parameter answers only to its own name, so whatever else still answers at
-- the address -- the service of a VM that had the address a moment ago and
-- is still shutting down -- does not pass for the one just started.
-- Services that do not know the parameter ignore it.
function M.healthy(el, vm, timeout, name)
  local h = el.body.service and el.body.service.health
  if not h then return true end
  local path = h.http or "/"
  if name then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. "instance=" ..
           name:gsub("[^%w._~-]", function(ch) return string.format("%%%02X", ch:byte()) end)
  end
  local url = string.format("http://%s:%d%s", host_of(vm), h.port, path)
  local limit = timeout or h.timeout_s or 30
  local deadline = cfm.now_ms() + limit * 1000
  local pause, last = 0.01, "no answer"
  repeat
    -- The agent tries again on its own, every few milliseconds, until the
    -- service answers or retry_for is over (an agent that predates
    -- retry_for answers after one try, and this loop polls instead).
    local left = math.max(0, deadline - cfm.now_ms()) / 1000
    local r = http_get(vm, url, {timeout = 1, max_body = 0, retry_for = left})
    if r.status >= 200 and r.status < 400 then return true end
    last = r.status > 0 and ("HTTP " .. r.status) or (r.error or "no answer")
    if cfm.now_ms() >= deadline then break end
    sleep(pause)
    pause = math.min(pause * 2, 0.2)
  until cfm.now_ms() >= deadline
  error(string.format("%s on %s: %s did not answer within %gs (last: %s)", el.id, vm.id, url,
                      limit, last))
end

-- What makes a command line need a shell: quotes, expansions, redirections,
-- pipes, lists, globs, comments, assignments. A line without any is words.
local SHELL_SYNTAX = "[|&;<>()$`\\\"'*?%[%]#~{}=\n]"

-- The command that starts a service: with service.log the service is
-- started detached (the agent answers once it runs; its output goes to that
-- file of the VM's disk), and a line of plain words runs without a shell
-- (one process rather than three: the shell, its fork for "&", the service);
-- without it, the line is a shell command that puts the service in the
-- background itself.
local function start_command(s, line)
  if not s.log then return line, nil end
  local opts = {detach = true, log = s.log}
  if line:find(SHELL_SYNTAX) then return line, opts end
  local argv = {}
  for word in line:gmatch("%S+") do argv[#argv + 1] = word end
  return argv, opts
end

-- Starts the service of an element on a VM (already configured) and waits
-- until that very instance answers its health check.
function M.start_service(el, vm, name, extra, lists)
  local s = el.body.service
  if not s or not s.start then return end
  local r = run_agent_command(vm, start_command(s, render(s.start, M.vars(vm, name, extra, lists))))
  if r.code ~= 0 then
    error(string.format("%s on %s: start failed (%d): %s", el.id, vm.id, r.code, r.stderr))
  end
  M.healthy(el, vm, nil, name)
end

-- Stops the service (its service.stop) and starts it again with the
-- current vars: how a running db learns of a new replica.
function M.restart_service(el, vm, name, extra)
  local s = el.body.service
  if s and s.stop then
    local r = run_agent_command(vm, render(s.stop, M.vars(vm, name, extra)))
    if r.code ~= 0 then
      error(string.format("%s on %s: stop failed (%d): %s", el.id, vm.id, r.code, r.stderr))
    end
  end
  M.start_service(el, vm, name, extra)
end

-- The machine of a new instance of el at this site: its VM, with the
-- element's volumes attached and its address associated. The VM is added
-- to `started` (when given) as soon as it exists. release (optional): tasks
-- that free volumes, addresses or capacity (terminating the VMs that hold
-- them), waited for once the VM runs, before anything is attached to it;
-- a VM the site cannot start while they run is tried again once they are
-- done.
function M.start_machine(el, started, release)
  local ok, vm = pcall(run_vm, el.body.vm_class, {element = el.id})
  if not ok then
    if not release or #release == 0 then error(vm, 0) end
    wait(release)
    vm = run_vm(el.body.vm_class, {element = el.id})
  end
  if started then started[#started + 1] = vm.id end
  local attaches = el.body.volumes and #el.body.volumes > 0 or el.body.address
  if attaches and release and #release > 0 then wait(release) end
  for _, vol in ipairs(el.body.volumes or {}) do vm = attach_volume(vm, vol) end
  if el.body.address then vm = associate_address(vm, el.body.address) end
  return vm
end

-- Configures el's instance on vm (from start_machine) and starts its
-- service, until that instance answers its health check. lists: as vars'.
function M.start_on(el, vm, extra, lists)
  local name = el.id .. "." .. vm.id
  M.configure(el, vm, name, lists)
  M.start_service(el, vm, name, extra, lists)
  log("info", "%s: instance %s up at %s (%s)", el.id, name, vm.private_ip, cfm.site)
  return vm
end

-- One new instance of el at this site: VM, volumes, address, config, service.
-- The VM is added to `started` (when given) as soon as it exists.
function M.start_instance(el, started, extra)
  return M.start_on(el, M.start_machine(el, started), extra)
end

-- Brings el to `count` running instances at this site, in parallel.
-- started (a list, optional) collects every VM started, also when one of
-- them fails, so a caller can undo a partial start.
function M.ensure(el, count, started, extra)
  local have = #M.instances(el.id, cfm.site)
  local tasks = {}
  for _ = have + 1, count do
    tasks[#tasks + 1] = async(function()
      local ok, vm_or_err = pcall(M.start_instance, el, started, extra)
      if not ok then error(vm_or_err, 0) end
      return vm_or_err
    end)
  end
  if #tasks > 0 then wait(tasks) end
  return #tasks
end

-- Brings several elements to their counts at this site at once: plan is a
-- list of {el = element, count = n} in dependency order (as
-- elements_in_order gives them); have = k in an entry says how many of its
-- instances here count (default: those running now; 0 when they are being
-- released). Every missing machine starts at once --
-- VMs do not depend on each other --, and each element's instances are
-- configured and their services started as soon as the elements it depends
-- on in the plan answer their health checks (db, then web, then lb; two
-- elements that do not depend on each other start side by side). Returns
-- how many instances it started; raises once everything it began has
-- finished, with the first error, like wait. started and extra as ensure's.
-- opts (optional): release, tasks freeing volumes or addresses (see
-- start_machine); meanwhile, a function called once every machine is
-- being started, before any instance is configured (the VMs boot while it
-- runs).
function M.ensure_all(plan, started, extra, opts)
  local machines, ready, n = {}, {}, 0
  opts = opts or {}
  for _, p in ipairs(plan) do
    local list = {}
    for _ = (p.have or #M.instances(p.el.id, cfm.site)) + 1, p.count do
      list[#list + 1] = async(M.start_machine, p.el, started, opts.release)
    end
    machines[p.el.id] = list
    n = n + #list
  end
  if opts.meanwhile then opts.meanwhile() end
  local all = {}
  for _, p in ipairs(plan) do
    local deps = {}
    for _, d in ipairs(p.el.body.depends_on or {}) do deps[#deps + 1] = ready[d] end
    ready[p.el.id] = async(function()
      local vms = #machines[p.el.id] > 0 and wait(machines[p.el.id]) or {}
      if #deps > 0 then wait(deps) end
      local services, lists = {}, #vms > 0 and M.instance_lists()
      for _, vm in ipairs(vms) do
        services[#services + 1] = async(M.start_on, p.el, vm, extra, lists)
      end
      if #services > 0 then wait(services) end
    end)
    all[#all + 1] = ready[p.el.id]
  end
  if #all > 0 then wait(all) end
  return n
end

-- Asks site to run action (a procedure bound with run_at "target" that
-- answers <action>_done with the request's id) and waits for the answer.
function M.at(site, action, payload, timeout)
  payload.target_site = site
  local req = publish_cloud_event(event.system, action, payload)
  local ev, err = wait_cloud_event(event.system, action .. "_done",
                                   {match = {request = req}, timeout = timeout or 300})
  if not ev then error(string.format("%s at %s: %s", action, site, err)) end
  if ev.payload.error then error(string.format("%s at %s: %s", action, site, ev.payload.error)) end
  return ev.payload
end

-- Asks site to deploy el and waits for its answer.
function M.deploy_at(el, site, timeout)
  local req = publish_cloud_event(event.system, "deploy_element",
                                  {element = el.id, target_site = site})
  local ev, err = wait_cloud_event(event.system, "element_deployed",
                                   {match = {request = req}, timeout = timeout or 300})
  if not ev then error(string.format("%s at %s: %s", el.id, site, err)) end
  if ev.payload.error then error(string.format("%s at %s: %s", el.id, site, ev.payload.error)) end
end

-- Re-renders the config of every running instance of the elements that
-- have config templates (e.g. the lb's backend list) at this site.
function M.reconfigure(site)
  local lists
  for _, el in ipairs(cfm.objects("BusinessSystemElement")) do
    if el.body.config_templates and #el.body.config_templates > 0 then
      for _, x in ipairs(M.instances(el.id, site or cfm.site)) do
        lists = lists or M.instance_lists()
        M.configure(el, x.vm, x.inst.id, lists)
      end
    end
  end
end

return M
