#!/usr/bin/env bash
# A manager on a real broker loads examples/web3tier.json through cfmctl,
# lists it, loads it again as a no-op, survives a restart with every object
# still there, and reconnects after its broker is restarted.
source "$(dirname "$0")/lib.sh"

start_broker a
start_manager site-a a

step "load the example system"
out=$(ctl site-a system load "$CFM_SRC/examples/web3tier.json") || fail "load: $out"
assert_contains "$out" "10 created, 0 updated, 0 deleted, 0 unchanged" "first load"
assert_eq 10 "$(count_objects site-a --system shop)" "objects after load"
assert_contains "$(ctl site-a system list)" "shop" "system list"
assert_contains "$(ctl site-a system show shop)" "lb-conf" "system show"

step "the same file again changes nothing"
out=$(ctl site-a system load "$CFM_SRC/examples/web3tier.json")
assert_contains "$out" "0 created, 0 updated, 0 deleted, 10 unchanged" "second load"

step "a changed file updates only what changed, and deletes what it dropped"
sed -e 's/"count": 2/"count": 3/' "$CFM_SRC/examples/web3tier.json" >"$TMP/changed.json"
grep -q '"count": 3' "$TMP/changed.json" || fail "test setup: web count not found in the example"
before=$(ctl site-a --json objects list --system shop --kind BusinessSystemElement)
out=$(ctl site-a system load "$TMP/changed.json")
assert_contains "$out" "0 created, 1 updated, 0 deleted, 9 unchanged" "changed load"
after=$(ctl site-a --json objects list --system shop --kind BusinessSystemElement)
[ "$before" != "$after" ] || fail "the web element did not change"

step "restart: every object is still there"
stop_manager site-a || fail "manager did not stop cleanly (exit $?)"
assert_contains "$(retained a cfm/v1/site/site-a/status)" '"offline"' "status after stop"
start_manager site-a a
assert_eq 10 "$(count_objects site-a --system shop)" "objects after restart"
wait_until 5 "status online after restart" \
    bash -c "mosquitto_sub -p ${BROKER_PORT[a]} -t cfm/v1/site/site-a/status -C 1 -W 1 | grep -q online"

step "the broker restarts: the manager reconnects and is online again"
stop_broker a
start_broker a
wait_until 15 "manager answering after broker restart" ctl site-a -t 1 ping
assert_contains "$(retained a cfm/v1/site/site-a/status)" '"online"' "status after broker restart"
manager_alive site-a || fail "manager died across the broker restart"

step "a stale offline status of a running site (as a bridge may re-send) is corrected"
mosquitto_pub -p "${BROKER_PORT[a]}" -q 1 -r -t cfm/v1/site/site-a/status \
    -m '{"state":"offline","site":"site-a"}'
status_online() { retained a cfm/v1/site/site-a/status | grep -q '"online"'; }
wait_until 10 "the manager to republish its online status" status_online
assert_contains "$(ctl site-a sites list)" "online" "site-a in sites list"

step "the retained objects are on the broker"
assert_contains "$(retained a cfm/v1/sys/shop/obj/VMClass/small)" '"image"' "retained VMClass"

stop_manager site-a || fail "manager exit status $? on SIGTERM"
pass
