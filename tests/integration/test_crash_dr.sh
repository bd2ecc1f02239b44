#!/usr/bin/env bash
# Crash injection into DR: the example shop's dr run at site-b is killed
# with SIGKILL at a different step each time (inside every kind of API call
# it makes: before its effect is answered, after the answer is known but not
# journaled, and after it is journaled), the manager is started again, and
# each time the run must succeed with exactly the expected VMs (none started
# twice), files (the lb's backend list, the data on the replica's volume)
# and events (one dr_completed id), as if nothing had happened.
#
# CFM_CRASH_POINTS="CALL:N:PHASE ..." runs only those rounds.
#
# Each round starts from scratch: a fresh broker, a fresh site-b whose
# standby replica holds data the primary (site-a, gone before the round
# begins) wrote, then the dr event.
source "$(dirname "$0")/lib.sh"

PROCS=$CFM_SRC/procedures
ROUND=0

# in_state ELEMENT STATE: VMInstances of the element at site-b in that state.
in_state() {
    ctl site-b vms list --system shop --site site-b | awk -v e="$1" -v s="$2" '$6 == e && $4 == s' |
        wc -l
}
ip_of() { # ELEMENT COLUMN: an address of a running instance (7 private, 8 public)
    ctl site-b vms list --system shop --site site-b |
        awk -v e="$1" -v c="$2" '$6 == e && $4 == "running" {print $c; exit}'
}
# vm_pids: the pids of site-b's VMs the local driver started (0: terminated).
vm_pids() {
    for vmjson in "$TMP"/site-b/vms/*/vm.json; do
        [ -f "$vmjson" ] && grep -o '"pid": *[0-9]*' "$vmjson" | grep -o '[0-9]*$'
    done
}
kill_vms() {
    for pid in $(vm_pids); do
        [ "$pid" -gt 0 ] && kill -KILL -- "-$pid" 2>/dev/null
    done
}

round() { # FAILPOINT
    local fp=$1 broker run rrun rep lb
    ROUND=$((ROUND + 1))
    broker=b$ROUND
    step "round $ROUND: SIGKILL at $fp"
    start_broker "$broker"
    rm -rf "$TMP/site-b"
    start_manager site-b "$broker" --procedures "$PROCS"
    ctl site-b system load "$CFM_SRC/examples/web3tier.json" >/dev/null || fail "$fp: load"

    # The standby replica, holding an order the primary wrote before it was lost.
    pub "$broker" cfm/v1/sys/shop/event/deploy_element \
        "{\"id\": \"rep-$ROUND\", \"payload\": {\"target_site\": \"site-b\", \"element\": \"db-replica\"}}"
    rrun=$(run_id "rep-$ROUND" site-b deploy_element)
    ctl site-b runs wait "$rrun" --timeout 120 >/dev/null ||
        fail "$fp: the replica's deploy: $(ctl site-b runs show "$rrun" | tail -n 20)"
    rep=$(ip_of db-replica 7)
    curl -sf --max-time 3 -X PUT --data "2 books" "http://$rep:7000/kv/order-1" >/dev/null ||
        fail "$fp: write to the replica"

    # The manager, armed, runs dr and dies at the failpoint; started again, it finishes.
    stop_manager site-b || fail "$fp: stop"
    CFM_FAILPOINT=$fp start_manager site-b "$broker" --procedures "$PROCS"
    mosquitto_sub -p "${BROKER_PORT[$broker]}" -t cfm/v1/sys/shop/event/dr_completed -v \
        >"$TMP/completed-$ROUND.txt" &
    PIDS[sub]=$!
    pub "$broker" cfm/v1/sys/shop/event/dr \
        "{\"id\": \"dr-$ROUND\", \"payload\": {\"target_site\": \"site-b\"}}"
    run=$(run_id "dr-$ROUND" site-b dr)
    died_of_failpoint site-b "$fp"
    start_manager site-b "$broker" --procedures "$PROCS"
    ctl site-b runs wait "$run" --timeout 120 >/dev/null ||
        fail "$fp: dr did not succeed after the restart: $(ctl site-b runs show "$run" | tail -n 20)"
    # Restored from its row (with no journaled call when the kill came in
    # a later turn of resumes than its first: the calls of a turn commit
    # together at its end) -- or the kill came in its first turn, which
    # commits with the dr event that started it (the turns an event's read
    # makes due are taken inside that read's transaction): nothing of the
    # event was stored or acknowledged, so the broker delivered dr again
    # and the run started anew -- or the kill came just after the commit of
    # the run's last turn, and the run had ended.
    killed=$(grep -n "CFM_FAILPOINT $fp reached" "$TMP/site-b.log" | head -n 1 | cut -d: -f1)
    [ -n "$killed" ] || fail "$fp: no failpoint line"
    if ! grep -q "run $run restored: dr.lua on shop, [0-9][0-9]* journaled call(s)" \
        "$TMP/site-b.log"; then
        ended=$(grep -n "engine: run $run succeeded" "$TMP/site-b.log" | head -n 1 | cut -d: -f1)
        again=$(tail -n "+$killed" "$TMP/site-b.log" | grep -c "event dr on shop (id dr-$ROUND," || true)
        restarted=$(tail -n "+$killed" "$TMP/site-b.log" | grep -c "engine: run $run started" || true)
        if [ "$again" -ge 1 ] && [ "$restarted" -ge 1 ]; then
            step "$fp: killed in the dr event's own read; dr delivered again, the run started anew"
        else
            [ -n "$ended" ] && [ "$ended" -lt "$killed" ] ||
                fail "$fp: the run was neither replayed from its journal, nor started again" \
                    "from dr delivered again, nor ended before the kill"
        fi
    fi

    # Exactly the system, once.
    assert_eq 1 "$(in_state db running)" "$fp: db running"
    assert_eq 2 "$(in_state web running)" "$fp: web running"
    assert_eq 1 "$(in_state lb running)" "$fp: lb running"
    assert_eq 0 "$(in_state db-replica running)" "$fp: replica still running"
    assert_eq 5 "$(ls -d "$TMP"/site-b/vms/*/ | wc -l)" "$fp: VMs ever made (replica + 4)"
    local alive=0
    for pid in $(vm_pids); do
        [ "$pid" -gt 0 ] && kill -0 "$pid" 2>/dev/null && alive=$((alive + 1))
    done
    assert_eq 4 "$alive" "$fp: VM processes alive"
    assert_eq 1 "$(grep -l '^server' "$TMP"/site-b/vms/*/disk/etc/cfm-lb/backends.conf | wc -l)" \
        "$fp: lb configs"
    assert_eq 2 "$(grep -ch '^server' "$TMP"/site-b/vms/*/disk/etc/cfm-lb/backends.conf)" \
        "$fp: backends in the lb's config"
    lb=$(ip_of lb 8)
    assert_eq "2 books" "$(curl -sf --max-time 3 "http://$lb:8000/kv/order-1")" \
        "$fp: the order written before DR, through the recovered system"
    assert_contains "$(ctl site-b system show shop)" "primary site-b" "$fp: roles"
    completed() { grep -q '"type":"dr_completed"' "$TMP/completed-$ROUND.txt"; }
    wait_until 10 "$fp: dr_completed" completed
    assert_eq 1 "$(grep -o '"id":"[^"]*"' "$TMP/completed-$ROUND.txt" | sort -u | wc -l)" \
        "$fp: distinct dr_completed events"
    assert_eq 0 "$(sqlite3 "$TMP/site-b/cfm.db" "select count(*) from runs")" \
        "$fp: runs left in the journal"

    kill "${PIDS[sub]}" 2>/dev/null
    wait "${PIDS[sub]}" 2>/dev/null
    unset "PIDS[sub]"
    stop_manager site-b || fail "$fp: the manager did not stop cleanly"
    kill_vms
    stop_broker "$broker"
}

for fp in ${CFM_CRASH_POINTS:-terminate_vm:1:sent cfm.objects:4:journaled run_vm:1:sent run_vm:1:done \
          attach_volume:1:sent attach_volume:1:journaled run_agent_command:1:sent \
          run_agent_command:3:done run_vm:3:sent put_file:1:sent associate_address:1:done \
          cfm.save:1:done cfm.save:1:journaled publish_cloud_event:1:done \
          publish_cloud_event:1:journaled}; do
    round "$fp"
done
pass
