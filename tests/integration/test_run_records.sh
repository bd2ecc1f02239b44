#!/usr/bin/env bash
# A run's record (its ProcedureRun object, replicated to every site, and the
# retained copy on cfm/v1/sys/<system>/run/<id>) is written when what it
# shows changes, not each time the run waits: procedures/ticks.lua waits
# for six "tick" events, each time for the same thing, and the ticks come
# 0.3 s apart (a slow producer's pace, longer than the 100 ms a waiting
# run's record waits before it is written), so every wait lasts long
# enough to be recorded. The waiting record is written once, not six
# times; the run's start and end are written as ever.
source "$(dirname "$0")/lib.sh"

one_site_shop '{"ticker": {"script": "ticks.lua", "run_at": "site-a"}}'

step "a watcher of the runs' records, then a run that waits for ticks"
stdbuf -oL mosquitto_sub -d -p "${BROKER_PORT[a]}" -q 1 -v -t 'cfm/v1/sys/shop/run/#' \
    >"$TMP/records.out" &
PIDS[records]=$!
wait_until 5 "the watcher subscribed" grep -q '^Subscribed' "$TMP/records.out"
pub a cfm/v1/sys/shop/event/ticker '{"id": "ev-ticker-1", "payload": {}}'
run=$(run_id ev-ticker-1 site-a ticker)
wait_until 20 "run $run waiting" run_is site-a "$run" waiting

step "six ticks, 0.3 s apart"
for i in 1 2 3 4 5 6; do
    # The producer's pace, which the scenario is about: the run waits 0.3 s
    # each time, long enough for its record to be written if it were.
    sleep 0.3
    last=false
    [ "$i" -eq 6 ] && last=true
    pub a cfm/v1/sys/shop/event/tick "{\"id\": \"tick-$i\", \"payload\": {\"n\": $i, \"last\": $last}}"
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
pass
