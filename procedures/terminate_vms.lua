-- terminate_vms: terminate the VMs listed in payload.vms at this site
-- (asked by scale_in at another site for the instances it removed here).
local done = {}
for _, id in ipairs(event.payload.vms or {}) do
  terminate_vm(id)
  done[#done + 1] = id
end
return {terminated = done}
