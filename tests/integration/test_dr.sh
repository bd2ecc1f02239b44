#!/usr/bin/env bash
# The demo's scenario with assertions at every step: two bridged sites,
# the example shop deployed at site-a with real services, healed after a
# web VM is killed, scaled out into site-b (and refused clearly when both
# sites are full), then site-a is killed entirely and the shop recovered at
# site-b from one plain MQTT event, its data intact; a second DR is a no-op;
# site-a comes back (rebuilt) and the shop fails back to it with every write.
source "$(dirname "$0")/lib.sh"
BUILD=$CFM_BUILD
DIR=$TMP
say() { step "$*"; }
source "$CFM_SRC/scripts/dr-lib.sh"
trap 'st=$?; dr_cleanup; (exit $st); cleanup' EXIT

# count SITE ELEMENT STATE: VMInstances of the element at the site in that state.
count() {
    dr_ctl "$1" vms list --system shop --site "$1" | awk -v e="$2" -v s="$3" '$6 == e && $4 == s' |
        wc -l
}
result_of() { echo "$1" | tr -d '\n ' | grep -o '"result":{[^}]*}'; }

dr_broker site-a
dr_broker site-b site-a
dr_manager site-a 6
dr_manager site-b 8
dr_ctl site-a system load "$CFM_SRC/examples/web3tier.json" >/dev/null || fail "load"

say "deploy: db, 2 web, lb at site-a; the db replica at site-b"
res=$(dr_run site-a deploy '{}' 180)
assert_contains "$(result_of "$res")" '"started":4' "deploy result"
assert_eq 1 "$(count site-a db running)" "db at site-a"
assert_eq 2 "$(count site-a web running)" "web at site-a"
assert_eq 1 "$(count site-a lb running)" "lb at site-a"
assert_eq 1 "$(count site-b db-replica running)" "db replica at site-b"
LB_A=$(dr_public site-a)
[ -n "$LB_A" ] || fail "no public address at site-a"
declare -A seen=()
for _ in 1 2 3 4; do
    body=$(dr_http "http://$LB_A:8000/") || fail "HTTP through the lb"
    seen[$body]=1
done
assert_eq 2 "${#seen[@]}" "distinct web instances answering through the lb"
curl -sf --max-time 3 -X PUT --data "2 books" "http://$LB_A:8000/kv/order-1" >/dev/null ||
    fail "write through the shop"
assert_eq "2 books" "$(dr_http "http://$LB_A:8000/kv/order-1")" "read back at site-a"

# The db copies each write to the replica at site-b within a bounded time
# (docs/operations.md, RPO); DR keeps what reached it. Wait for that here.
at_replica() { grep -qx "2 books" "$DIR"/site-b/vms/*/disk/volumes/db-data/order-1 2>/dev/null; }
wait_until 20 "order-1 to reach the replica at site-b" at_replica

say "heal: a web VM is killed with kill -9; vm_failed starts heal, which replaces it"
victim=$(dr_ctl site-a vms list --system shop --site site-a | awk '$6 == "web" && $4 == "running" {print $1; exit}')
pid=$(grep -o '"pid": *[0-9]*' "$DIR/site-a/vms/$victim/vm.json" | grep -o '[0-9]*$')
kill -KILL -- "-$pid"
healed() { [ "$(count site-a web running)" = 2 ] && [ "$(count site-a web failed)" = 0 ] &&
           dr_ctl site-a runs list --system shop | grep heal.lua | grep -q succeeded; }
wait_until 60 "heal to replace $victim" healed
assert_eq 1 "$(dr_ctl site-a vms list --system shop --site site-a | grep "$victim" | grep -c terminated)" \
    "the failed VM is terminated"
new_web() { dr_http "http://$LB_A:8000/" && grep -q "web\." "$(ls "$DIR"/site-a/vms/*/disk/etc/cfm-lb/backends.conf)"; }
wait_until 10 "the lb to answer after heal" new_web
grep -q "$victim" "$DIR"/site-a/vms/*/disk/etc/cfm-lb/backends.conf &&
    fail "the lb config still lists the failed VM"

say "scale_out +2: one fits at site-a (6 vCPU), the other goes to site-b"
res=$(dr_run site-a scale_out '{"count": 2}' 180)
assert_contains "$(result_of "$res")" '"here":1' "instances added at site-a"
assert_contains "$(result_of "$res")" '"there":1' "instances added at site-b"
assert_eq 3 "$(count site-a web running)" "web at site-a after scale-out"
assert_eq 1 "$(count site-b web running)" "web at site-b after scale-out"
backends=$(cat "$DIR"/site-a/vms/*/disk/etc/cfm-lb/backends.conf)
assert_eq 4 "$(grep -c '^server web\.' <<<"$backends")" "backends in the lb config"

say "scale_out when both sites are full is refused with the reason"
id=$(dr_ctl site-a --json event publish shop scale_out '{"count": 6}' | grep '"id"' | head -n 1 | cut -d'"' -f4)
wait_until 20 "the scale-out run" dr_find_run site-a "$id"
run=$(dr_find_run site-a "$id")
dr_ctl site-a runs wait "$run" --timeout 120 2>"$TMP/full.err" && fail "a scale-out beyond both sites succeeded"
assert_contains "$(cat "$TMP/full.err")" "no capacity" "the reason"

say "scale_in -2: the overflow at site-b goes first, and the lb stops sending to it"
webs_before=$(( $(count site-a web running) + $(count site-b web running) ))
b_before=$(count site-b web running)
[ "$b_before" -ge 2 ] || fail "test setup: expected at least 2 web instances at site-b, got $b_before"
res=$(dr_run site-a scale_in '{"count": 2}' 120)
assert_contains "$(result_of "$res")" '"removed":2' "scale_in result"
gone_at_b() { [ "$(count site-b web running)" = $((b_before - 2)) ]; }
wait_until 30 "two web instances at site-b to be terminated" gone_at_b
assert_eq "$((webs_before - 2))" "$(( $(count site-a web running) + $(count site-b web running) ))" \
    "web instances after scale_in"
assert_eq "$((webs_before - 2))" \
    "$(grep -c '^server web\.' "$(ls "$DIR"/site-a/vms/*/disk/etc/cfm-lb/backends.conf)")" \
    "backends in the lb config after scale_in"

say "site-a is killed (manager, broker, VMs); site-b sees it offline"
dr_kill_site site-a
a_offline() { dr_ctl site-b sites list | grep site-a | grep -q offline; }
wait_until 30 "site-b to see site-a offline" a_offline

say "dr by a plain mosquitto_pub at site-b"
mosquitto_pub -p "${DR_PORT[site-b]}" -q 1 -t cfm/v1/sys/shop/event/dr \
    -m '{"id":"dr-1","payload":{"target_site":"site-b"}}' || fail "publish dr"
wait_until 20 "the dr run" dr_find_run site-b dr-1
run=$(dr_find_run site-b dr-1)
dr_ctl site-b runs wait "$run" --timeout 180 >/dev/null || fail "dr: $(dr_ctl site-b runs show "$run" | tail -20)"
assert_contains "$(dr_ctl site-b --json runs show "$run")" '"rto_ms"' "dr result"
assert_eq 1 "$(count site-b db running)" "db at site-b"
assert_eq 2 "$(count site-b web running)" "web at site-b"
assert_eq 1 "$(count site-b lb running)" "lb at site-b"
assert_eq 0 "$(count site-b db-replica running)" "replica at site-b (taken over)"
assert_contains "$(dr_ctl site-b system show shop)" "primary site-b, standby site-a" "roles swapped"
LB_B=$(dr_public site-b)
[ -n "$LB_B" ] || fail "no public address at site-b"
dr_http "http://$LB_B:8000/" | grep -q "hello from web" || fail "HTTP from site-b"
assert_eq "2 books" "$(dr_http "http://$LB_B:8000/kv/order-1")" "the order written before the disaster"

say "dr published a second time is a no-op"
before=$(dr_ctl site-b vms list --system shop --site site-b | grep -c running)
mosquitto_pub -p "${DR_PORT[site-b]}" -q 1 -t cfm/v1/sys/shop/event/dr \
    -m '{"id":"dr-2","payload":{"target_site":"site-b"}}' || fail "publish dr again"
wait_until 20 "the second dr run" dr_find_run site-b dr-2
run=$(dr_find_run site-b dr-2)
dr_ctl site-b runs wait "$run" --timeout 60 >/dev/null || fail "second dr failed"
assert_contains "$(dr_ctl site-b --json runs show "$run")" '"noop": true' "second dr result"
assert_eq "$before" "$(dr_ctl site-b vms list --system shop --site site-b | grep -c running)" \
    "VMs after the second dr"

say "site-a comes back, rebuilt (an empty state directory); an order is written at site-b meanwhile"
curl -sf --max-time 3 -X PUT --data "1 lamp" "http://$LB_B:8000/kv/order-2" >/dev/null ||
    fail "write at site-b"
rm -rf "$DIR/site-a"
dr_broker site-a
dr_manager site-a 6
b_is_primary_at_a() { dr_ctl site-a system show shop | grep -q "primary site-b"; }
wait_until 30 "site-a to learn that site-b is the primary" b_is_primary_at_a

say "failback to site-a: a short planned outage, every write kept, the replica back at site-b"
res=$(dr_run site-a failback '{"target_site": "site-a"}' 300)
assert_contains "$(result_of "$res")" '"from":"site-b"' "failback result"
assert_eq 1 "$(count site-a db running)" "db at site-a"
assert_eq 2 "$(count site-a web running)" "web at site-a"
assert_eq 1 "$(count site-a lb running)" "lb at site-a"
assert_eq 1 "$(count site-b db-replica running)" "replica at site-b"
for el in db web lb; do
    assert_eq 0 "$(count site-b $el running)" "$el left running at site-b"
done
assert_contains "$(dr_ctl site-a system show shop)" "primary site-a, standby site-b" "roles"
LB_A=$(dr_public site-a)
[ -n "$LB_A" ] || fail "no public address at site-a after failback"
assert_eq "2 books" "$(dr_http "http://$LB_A:8000/kv/order-1")" "order-1 (written before DR)"
assert_eq "1 lamp" "$(dr_http "http://$LB_A:8000/kv/order-2")" "order-2 (written at site-b)"
curl -sf --max-time 3 -X PUT --data "3 pens" "http://$LB_A:8000/kv/order-3" >/dev/null ||
    fail "write after failback"
replicated() { grep -qx "3 pens" "$DIR"/site-b/vms/*/disk/volumes/db-data/order-3 2>/dev/null; }
wait_until 10 "order-3 to reach the replica at site-b" replicated
pass
