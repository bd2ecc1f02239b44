#!/usr/bin/env bash
# A run's record (its ProcedureRun object, replicated to every site, and the
# retained copy on cfm/v1/sys/<system>/run/<id>):
# 1. is written when what it shows changes, not each time the run waits:
#    procedures/ticks.lua waits for six "tick" events, each time for the
#    same thing, and each tick comes only once the manager has looked at
#    the run's record of the wait before (its debug line: the record was
#    unchanged), as a slow producer's would, later than the 100 ms a
#    waiting run's record waits. The waiting record is written once, not
#    six times; the run's start and end are written as ever;
# 2. is deleted run_history_s after the run ended (the manager restarted
#    with --run-history-s 3): a tombstone in the store, the retained copy
#    cleared; a run that still waits keeps its record however old, and
#    loses it 3 s after it ends.
source "$(dirname "$0")/lib.sh"

one_site_shop '{"ticker": {"script": "ticks.lua", "run_at": "site-a"},
                "holder": {"script": "hold.lua", "run_at": "site-a"}}' --log-level debug

step "a watcher of the runs' records, then a run that waits for ticks"
stdbuf -oL mosquitto_sub -d -p "${BROKER_PORT[a]}" -q 1 -v -t 'cfm/v1/sys/shop/run/#' \
    >"$TMP/records.out" &
PIDS[records]=$!
wait_until 5 "the watcher subscribed" grep -q '^Subscribed' "$TMP/records.out"
pub a cfm/v1/sys/shop/event/ticker '{"id": "ev-ticker-1", "payload": {}}'
run=$(run_id ev-ticker-1 site-a ticker)
wait_until 20 "run $run waiting" run_is site-a "$run" waiting

step "six ticks, each once the run's record of the wait before was looked at"
unchanged() {  # unchanged N: site-a passed over the run's unchanged record N times
    [ "$(grep -c "run $run: its record is unchanged" "$TMP/site-a.log")" -ge "$1" ]
}
for i in 1 2 3 4 5 6; do
    last=false
    [ "$i" -eq 6 ] && last=true
    pub a cfm/v1/sys/shop/event/tick "{\"id\": \"tick-$i\", \"payload\": {\"n\": $i, \"last\": $last}}"
    # After tick i < 6 the run waits again, like the first time.
    if [ "$i" -lt 6 ]; then
        wait_until 10 "the record of $run's wait $((i + 1)) looked at" unchanged "$i"
    fi
done
wait_until 20 "run $run ended" run_ended site-a "$run"
assert_eq '"succeeded"' "$(run_field site-a "$run" state)" "state of $run"
assert_eq '{ "ticks": 6 }' "$(run_field site-a "$run" result)" "result of $run"
ended() { grep "^cfm/v1/sys/shop/run/$run " "$TMP/records.out" | grep -q '"state":"succeeded"'; }
wait_until 10 "the ended record on the run topic" ended

step "the waiting record was written once"
records=$(grep -c "^cfm/v1/sys/shop/run/$run " "$TMP/records.out" || true)
waiting=$(grep "^cfm/v1/sys/shop/run/$run " "$TMP/records.out" | grep -c '"state":"waiting"' || true)
assert_eq 1 "$waiting" "waiting records of $run (of $records records: $(cut -c1-200 "$TMP/records.out"))"

step "a run that waits, then the manager again, keeping ended runs' records 3 s"
pub a cfm/v1/sys/shop/event/holder '{"id": "ev-holder-1", "payload": {"n": 1}}'
held=$(run_id ev-holder-1 site-a holder)
wait_until 20 "run $held waiting" run_is site-a "$held" waiting
stop_manager site-a || fail "site-a's manager did not stop cleanly"
start_manager site-a a --procedures "$CFM_SRC/tests/integration/procedures" --run-history-s 3

record_gone() {  # record_gone RUN: no live record in the store, none retained
    ! ctl site-a objects list --kind ProcedureRun | grep -q "$1" &&
        [ -z "$(retained a "cfm/v1/sys/shop/run/$1")" ]
}
wait_until 30 "the record of $run (ended) deleted" record_gone "$run"
ctl site-a objects list --kind ProcedureRun --deleted | grep "$run" | grep -q deleted ||
    fail "no tombstone of $run: $(ctl site-a objects list --kind ProcedureRun --deleted)"
grep -q "deleted the records of 1 run(s) that ended over 3 s ago" "$TMP/site-a.log" ||
    fail "site-a did not log the deletion"
assert_eq '"waiting"' "$(run_field site-a "$held" state)" "the waiting run's record, older than 3 s"

step "the waiting run ends; its record goes 3 s later"
pub a cfm/v1/sys/shop/event/release '{"id": "release-1", "payload": {}}'
gone_or_ended() { record_gone "$held" || run_ended site-a "$held"; }
wait_until 20 "run $held ended" gone_or_ended
wait_until 30 "the record of $held deleted" record_gone "$held"
pass
