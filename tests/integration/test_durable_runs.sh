#!/usr/bin/env bash
# Runs survive their manager: killed with SIGKILL while a run waits for an
# event, sleeps, or interleaves async tasks, a manager started again replays
# each unfinished run from its journal and finishes it. An event published
# while the manager was down resumes its waiting run; a wait keeps what was
# left of its timeout; a changed procedure is refused until an operator
# forces it; a corrupted journal fails its run clearly and nothing else.
source "$(dirname "$0")/lib.sh"

PROCS=$TMP/procedures # a copy: one step changes a procedure
cp -r "$CFM_SRC/tests/integration/durable-procedures" "$PROCS"
start_broker a
start_manager site-a a --procedures "$PROCS"
cat >"$TMP/sys.json" <<'SYS'
{"id": "shop", "sites": ["site-a"], "primary": "site-a",
 "procedures": {"wait": {"script": "waiter.lua"}, "tasks": {"script": "tasks.lua"}}}
SYS
ctl site-a system load "$TMP/sys.json" >/dev/null || fail "load"

# state_of RUN: the run's state at site-a.
state_of() { run_field site-a "$1" state 2>/dev/null | tr -d '"'; }
is_state() { [ "$(state_of "$1")" = "$2" ]; }
# restart_with FAILPOINT: kill -9 site-a's manager, start it again armed
# with CFM_FAILPOINT (manager/failpoint.h).
restart_with() {
    kill_manager site-a
    CFM_FAILPOINT=$1 start_manager site-a a --procedures "$PROCS"
}

step "a run waiting for an event survives SIGKILL; the event sent while the manager is down resumes it"
pub a cfm/v1/sys/shop/event/wait '{"id": "ev-w1", "payload": {"token": "a"}}'
run1=$(run_id ev-w1 site-a wait)
wait_until 20 "run 1 to wait" is_state "$run1" waiting
kill_manager site-a
pub a cfm/v1/sys/shop/event/go '{"id": "ev-go-a", "payload": {"token": "a"}}'
start_manager site-a a --procedures "$PROCS"
ctl site-a runs wait "$run1" --timeout 30 >/dev/null || fail "run 1 did not succeed after the restart"
assert_contains "$(run_field site-a "$run1" result)" '"got": "ev-go-a"' "run 1's event"
grep -q "run $run1 restored" "$TMP/site-a.log" || fail "run 1 was not restored from its journal"

step "a wait keeps what was left of its timeout across the restart"
pub a cfm/v1/sys/shop/event/wait '{"id": "ev-w2", "payload": {"token": "b", "timeout": 6}}'
run2=$(run_id ev-w2 site-a wait)
wait_until 20 "run 2 to wait" is_state "$run2" waiting
kill_manager site-a
sleep 3 # the scenario: the manager stays down for 3 of the 6 s
start_manager site-a a --procedures "$PROCS"
ctl site-a runs wait "$run2" --timeout 30 >/dev/null || fail "run 2 did not succeed"
result=$(run_field site-a "$run2" result)
assert_contains "$result" '"why": "timeout"' "run 2 timed out"
elapsed=$(echo "$result" | sed -n 's/.*"elapsed_ms": \([0-9]*\).*/\1/p')
# 6 s after it began; a timeout restarted at the restart would end after 9 s.
[ "${elapsed:-0}" -ge 5900 ] && [ "${elapsed:-0}" -lt 8500 ] ||
    fail "run 2's wait ended after $elapsed ms; expected its 6 s timeout, counted from its start"

step "SIGKILL inside wait_cloud_event: with the wait registered, and with its event journaled"
# event:2:done: the manager dies with the awaited event (the second from the
# bus) handed to the run but not committed; the broker has no PUBACK for it
# and delivers it again to the restarted manager.
n=0
for fp in cfm.now_ms:1:done wait_cloud_event:1:sent wait_cloud_event:1:journaled event:2:done; do
    n=$((n + 1))
    restart_with "$fp"
    pub a cfm/v1/sys/shop/event/wait "{\"id\": \"ev-fp-$n\", \"payload\": {\"token\": \"fp$n\", \"timeout\": 60}}"
    run=$(run_id "ev-fp-$n" site-a wait)
    if [ "$fp" = wait_cloud_event:1:journaled ] || [ "$fp" = event:2:done ]; then
        wait_until 20 "$fp: the run to wait" is_state "$run" waiting
        pub a cfm/v1/sys/shop/event/go "{\"id\": \"ev-go-fp$n\", \"payload\": {\"token\": \"fp$n\"}}"
        died_of_failpoint site-a "$fp"
    else
        died_of_failpoint site-a "$fp"
        pub a cfm/v1/sys/shop/event/go "{\"id\": \"ev-go-fp$n\", \"payload\": {\"token\": \"fp$n\"}}"
    fi
    start_manager site-a a --procedures "$PROCS"
    ctl site-a runs wait "$run" --timeout 30 >/dev/null || fail "$fp: the run did not succeed"
    assert_contains "$(run_field site-a "$run" result)" "\"got\": \"ev-go-fp$n\"" "$fp: the event"
done

step "async tasks sharing a table replay in their first order after SIGKILL inside a sleep"
for fp in sleep:3:sent sleep:4:journaled publish_cloud_event:1:done publish_cloud_event:1:journaled; do
    restart_with "$fp"
    mosquitto_sub -p "${BROKER_PORT[a]}" -t cfm/v1/sys/shop/event/traced -v >"$TMP/traced.txt" &
    PIDS[sub]=$!
    evid=ev-t-${fp//:/-}
    pub a cfm/v1/sys/shop/event/tasks "{\"id\": \"$evid\", \"payload\": {}}"
    run=$(run_id "$evid" site-a tasks)
    died_of_failpoint site-a "$fp"
    start_manager site-a a --procedures "$PROCS"
    ctl site-a runs wait "$run" --timeout 30 >/dev/null ||
        fail "$fp: the tasks run did not succeed after the restart: $(run_field site-a "$run" error)"
    result=$(run_field site-a "$run" result)
    assert_contains "$result" '"trace": "2,10,alpha,mid,zeta,' "$fp: pairs in sorted order"
    for s in t1.1 t1.2 t2.1 t2.2 t3.1 t3.2; do assert_contains "$result" "$s" "$fp: step $s"; done
    id=$(echo "$result" | sed -n 's/.*"event_id": "\([^"]*\)".*/\1/p')
    seen_event() { grep -q "\"id\":\"$id\"" "$TMP/traced.txt"; }
    wait_until 10 "$fp: the traced event" seen_event
    kill "${PIDS[sub]}" 2>/dev/null
    wait "${PIDS[sub]}" 2>/dev/null
    unset "PIDS[sub]"
    other=$(grep -o '"id":"[^"]*"' "$TMP/traced.txt" | sort -u | grep -vc "\"id\":\"$id\"" || true)
    assert_eq 0 "$other" "$fp: traced events with another id (published twice)"
done

step "a procedure changed while its run was down is refused until an operator forces it"
pub a cfm/v1/sys/shop/event/wait '{"id": "ev-w3", "payload": {"token": "c"}}'
run3=$(run_id ev-w3 site-a wait)
wait_until 20 "run 3 to wait" is_state "$run3" waiting
kill_manager site-a
echo "-- changed while the manager was down" >>"$PROCS/waiter.lua"
start_manager site-a a --procedures "$PROCS"
wait_until 20 "run 3 to fail" is_state "$run3" failed
assert_contains "$(run_field site-a "$run3" error)" "waiter.lua changed since the run began" \
    "run 3's error"
out=$(ctl site-a runs resume "$run3" 2>&1) && fail "resume without --force was accepted: $out"
assert_contains "$out" "pass --force" "resume without --force"
ctl site-a runs resume "$run3" --force >/dev/null || fail "resume --force"
wait_until 20 "run 3 to wait again" is_state "$run3" waiting
pub a cfm/v1/sys/shop/event/go '{"id": "ev-go-c", "payload": {"token": "c"}}'
ctl site-a runs wait "$run3" --timeout 30 >/dev/null || fail "run 3 did not succeed once forced"
assert_contains "$(run_field site-a "$run3" result)" '"got": "ev-go-c"' "run 3's event"

step "a corrupted journal row fails its run with a clear error; the manager keeps serving"
pub a cfm/v1/sys/shop/event/wait '{"id": "ev-w4", "payload": {"token": "d"}}'
run4=$(run_id ev-w4 site-a wait)
wait_until 20 "run 4 to wait" is_state "$run4" waiting
kill_manager site-a
sqlite3 "$TMP/site-a/cfm.db" "UPDATE journal SET result = '{broken' WHERE run = '$run4' AND seq = 1"
start_manager site-a a --procedures "$PROCS"
wait_until 20 "run 4 to fail" is_state "$run4" failed
assert_contains "$(run_field site-a "$run4" error)" "journal of run $run4 is corrupt at call 1" \
    "run 4's error"
ctl site-a ping >/dev/null || fail "the manager stopped answering"
pub a cfm/v1/sys/shop/event/wait '{"id": "ev-w5", "payload": {"token": "e"}}'
run5=$(run_id ev-w5 site-a wait)
wait_until 20 "run 5 to wait" is_state "$run5" waiting
pub a cfm/v1/sys/shop/event/go '{"id": "ev-go-e", "payload": {"token": "e"}}'
ctl site-a runs wait "$run5" --timeout 30 >/dev/null || fail "a new run after the corrupt one"
assert_eq 0 "$(sqlite3 "$TMP/site-a/cfm.db" "select count(*) from runs where state = 'active'")" \
    "rows of active runs left"

step "the manager stops cleanly"
stop_manager site-a || fail "manager exit status $? on SIGTERM"
pass
