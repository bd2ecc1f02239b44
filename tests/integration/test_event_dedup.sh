#!/usr/bin/env bash
# A manager remembers the ids of the events it handled for event_dedup_s
# (--event-dedup-s; 7 days by default), which is what drops a redelivered
# event, and then forgets them (seen_events would otherwise grow by every
# event for good). Here the window is 2 s: an event sent again within it is
# dropped; once its record is gone, the same event is handled again, and
# the run it started before is not started twice.
source "$(dirname "$0")/lib.sh"

WINDOW=2

one_site_shop '{"note": {"script": "note_seen.lua", "run_at": "site-a"}}' --event-dedup-s "$WINDOW"

handled() {  # handled ID: how many times site-a handled event ID (its info lines)
    grep -c "event: event note on shop (id $1," "$TMP/site-a.log"
}
records() {  # records ID: how many records of ID site-a's seen_events holds
    sqlite3 "file:$TMP/site-a/cfm.db?mode=ro" ".timeout 2000" \
        "select count(*) from seen_events where id = '$1'"
}
forgotten() { [ "$(records "$1")" = 0 ]; }

step "an event is handled once; sent again within the window, it is dropped"
pub a cfm/v1/sys/shop/event/note '{"id": "ev-d1", "payload": {"n": 1}}'
run=$(run_id ev-d1 site-a note)
wait_until 20 "run $run to succeed" run_is site-a "$run" succeeded
assert_eq 1 "$(records ev-d1)" "records of ev-d1 in seen_events"
pub a cfm/v1/sys/shop/event/note '{"id": "ev-d1", "payload": {"n": 1}}'
pub a cfm/v1/sys/shop/event/note '{"id": "ev-m1", "payload": {"n": 2}}'  # handled after it
wait_until 20 "the marker's run" run_is site-a "$(run_id ev-m1 site-a note)" succeeded
assert_eq 1 "$(handled ev-d1)" "times ev-d1 was handled within the window"

step "after the window its id is forgotten; sent again, it is handled, its run not started twice"
wait_until 30 "ev-d1 forgotten (window ${WINDOW}s)" forgotten ev-d1
pub a cfm/v1/sys/shop/event/note '{"id": "ev-d1", "payload": {"n": 1}}'
wait_until 20 "ev-d1 handled again" test "$(handled ev-d1)" = 2
grep -q "rules: note on shop: run $run exists already" "$TMP/site-a.log" ||
    fail "the second ev-d1 did not find its run: $(grep "rules: note" "$TMP/site-a.log")"
out=$(ctl site-a runs list --system shop) || fail "runs list: $out"
[ "$(grep -c note_seen <<<"$out")" = 2 ] || fail "expected the runs of ev-d1 and ev-m1 only: $out"

step "the manager stops cleanly"
stop_manager site-a || fail "site-a exited with $?"
pass
