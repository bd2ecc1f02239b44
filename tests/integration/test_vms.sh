#!/usr/bin/env bash
# Procedures that really start, configure and lose VMs on the local driver:
# each VM is a real cfm-agent process with its own disk and loopback IP.
source "$(dirname "$0")/lib.sh"

start_broker a
cat >"$TMP/site-a.json" <<CONF
{"driver": {"type": "local", "capacity": {"cpu": 6, "memory_mb": 4096},
            "private_net": "127.77.$((BROKER_PORT[a] % 250 + 1))"}}
CONF
start_manager site-a a --config "$TMP/site-a.json" --procedures "$CFM_SRC/tests/integration/vm-procedures"

cat >"$TMP/sys.json" <<'SYS'
{"id": "shop", "sites": ["site-a"], "primary": "site-a",
 "procedures": {"three": {"script": "three_vms.lua"}, "big": {"script": "big.lua"},
                "one": {"script": "one.lua"}},
 "objects": {
   "VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256},
               "big": {"image": "cfm-local", "cpu": 8, "memory_mb": 256}},
   "Volume": {"data": {"size_mb": 16}},
   "Address": {"public": {"pool": "public"}},
   "BusinessSystemElement": {"web": {"vm_class": "small", "count": 3},
                             "db": {"vm_class": "small", "volumes": ["data"], "address": "public"}}}}
SYS
ctl site-a system load "$TMP/sys.json" >/dev/null || fail "load"

run_of() {  # run_of TYPE: the id of a run started by an event of TYPE
    ctl site-a --json runs list --system shop | tr -d '",' |
        awk -v t="$1" '$1 == "event_type:" {type = $2} $1 == "id:" {id = $2}
                       /^  }/ {if (type == t) print id; type = ""; id = ""}' | tail -n 1
}
started() { [ -n "$(run_of "$1")" ]; }

step "three VMs in parallel, a command on each, a rendered file read back, a timeout, http_get"
ctl site-a event publish shop three >/dev/null
wait_until 20 "the run of 'three' to start" started three
run=$(run_of three)
ctl site-a runs wait "$run" --timeout 60 >/dev/null || fail "run three: $(ctl site-a runs show "$run")"
result=$(ctl site-a --json runs show "$run")
assert_eq 3 "$(echo "$result" | grep -c '"out": "web-[123] on vm-')" "commands answered by three VMs"
assert_eq 3 "$(echo "$result" | grep -o '"ip": "127\.77\.[0-9]*\.[0-9]*"' | sort -u | wc -l)" "distinct private IPs"
assert_contains "$result" '"slow_timed_out": true' "a command over its timeout is reported"
health=$(printf '%s\n' "$result" | tr -d ' \n')
assert_contains "$health" '"health":{"body":"ok\n","status":200}' "http_get of the service's health"
echo "$health" | grep -q '"tries":[1-9]' || fail "http_get with retry_for gave no attempts: $health"
assert_contains "$health" 'opts.retry_formustbeanumberofsecondsfrom0to600' "a bad retry_for"
assert_contains "$health" '"other":{"body":"this","cut":true,"status":421}' "http_get of another instance's health"
assert_contains "$health" '"refused":{"error":"connectto127.77.' "http_get of a port nothing listens on"
assert_contains "$health" ':8081:connectionrefused","status":0}' "http_get of a port nothing listens on"
assert_eq 3 "$(echo "$result" | grep -o 'server vm-' | wc -l)" "the rendered config read back lists the VMs"
vms=$(ctl site-a vms list --system shop)
assert_eq 3 "$(echo "$vms" | grep -c ' running ')" "VMInstances running: $vms"
for pid in $(cat "$TMP"/site-a/vms/*/vm.json | grep -o '"pid": *[0-9]*' | grep -o '[0-9]*$'); do
    kill -0 "$pid" || fail "VM process $pid is not running"
    [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ] || fail "VM $pid is not in its own process group"
done
conf=$(cat "$TMP"/site-a/vms/*/disk/etc/lb/backends.conf)
assert_eq 3 "$(echo "$conf" | grep -c '^server vm-')" "the file on the VM's disk"

step "capacity exhaustion gives the clear error"
ctl site-a event publish shop big >/dev/null
wait_until 20 "the run of 'big' to start" started big
run=$(run_of big)
ctl site-a runs wait "$run" --timeout 30 2>"$TMP/big.err" && fail "a VM beyond capacity started"
assert_contains "$(cat "$TMP/big.err")" "has no capacity for VM class big" "capacity error"

step "volume and address"
ctl site-a event publish shop one >/dev/null
wait_until 20 "the run of 'one' to start" started one
run=$(run_of one)
ctl site-a runs wait "$run" --timeout 60 >/dev/null || fail "run one: $(ctl site-a runs show "$run")"
assert_contains "$(ctl site-a --json runs show "$run")" '"volumes": "data' "the volume is linked into the VM's disk"
assert_contains "$(ctl site-a vms list --system shop)" "127.78." "the public address"

step "kill -9 a VM: it is noticed, its VMInstance fails, vm_failed is published"
victim=$(ls "$TMP/site-a/vms" | head -n 1)
pid=$(grep -o '"pid": *[0-9]*' "$TMP/site-a/vms/$victim/vm.json" | grep -o '[0-9]*$')
mosquitto_sub -p "${BROKER_PORT[a]}" -t 'cfm/v1/sys/shop/event/+' -v -W 60 >"$TMP/failed.ev" &
PIDS[sub]=$!
# The subscription is live once a marker published after it comes through.
marker_seen() {
    pub a cfm/v1/sys/shop/event/marker '{"payload":{}}'
    grep -q 'event/marker' "$TMP/failed.ev"
}
wait_until 10 "the subscriber to be ready" marker_seen
kill -KILL "$pid"
failed_event() { grep 'event/vm_failed' "$TMP/failed.ev" | grep -q "$victim"; }
wait_until 15 "the vm_failed event" failed_event
vm_failed() { ctl site-a vms list --system shop | grep "$victim" | grep -q ' failed '; }
wait_until 15 "VMInstance $victim failed" vm_failed

step "the manager restarts and re-adopts its VMs"
before=$(ctl site-a vms list --system shop | grep -c ' running ')
stop_manager site-a || fail "manager stop"
for d in "$TMP"/site-a/vms/*/; do
    id=$(basename "$d")
    [ "$id" = "$victim" ] && continue
    p=$(grep -o '"pid": *[0-9]*' "$d/vm.json" | grep -o '[0-9]*$')
    [ -n "$p" ] && { kill -0 "$p" || fail "VM $id died with the manager"; }
done
start_manager site-a a --config "$TMP/site-a.json" --procedures "$CFM_SRC/tests/integration/vm-procedures"
assert_eq "$before" "$(ctl site-a vms list --system shop | grep -c ' running ')" "running VMs after restart"

step "every VM process is stopped at the end"
for d in "$TMP"/site-a/vms/*/; do
    p=$(grep -o '"pid": *[0-9]*' "$d/vm.json" | grep -o '[0-9]*$')
    [ "${p:-0}" -gt 0 ] && kill -KILL -- "-$p" 2>/dev/null
done
pass
