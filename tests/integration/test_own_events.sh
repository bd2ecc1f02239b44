#!/usr/bin/env bash
# A site's own events reach it without the broker: the manager subscribes
# to its systems' events "no local" and hands each event it publishes to
# itself in the transaction that publishes it (manager/publish.h).
# procedures/own_note.lua sleeps, publishes a "note" and waits for it; the
# note also starts procedures/note_seen.lua here. The broker is killed
# while the run sleeps: both must happen with no broker at all, each once,
# and the note must leave through the outbox once the broker is back.
source "$(dirname "$0")/lib.sh"

PROCS=$CFM_SRC/tests/integration/procedures
DELAY=3  # seconds own_note.lua sleeps: the test kills the broker meanwhile

cat >"$TMP/shop.json" <<'JSON'
{
  "id": "shop",
  "sites": ["site-a"],
  "primary": "site-a",
  "procedures": {
    "own": {"script": "own_note.lua", "run_at": "site-a"},
    "note": {"script": "note_seen.lua", "run_at": "origin"}
  },
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
JSON

start_broker a
start_manager site-a a --procedures "$PROCS"
out=$(ctl site-a system load "$TMP/shop.json") || fail "load: $out"

now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }  # the manager's log time stamps

# A watcher with a session the broker keeps: it gets the note once the
# manager's outbox has sent it, whoever reconnects first.
watch=$TMP/watch.out
mosquitto_sub -p "${BROKER_PORT[a]}" -c -i own-events-watch -q 1 -v \
    -t cfm/v1/sys/shop/event/note -t cfm/test/probe >"$watch" 2>&1 &
PIDS[watcher]=$!
probe_seen() { pub a cfm/test/probe up && grep -q "^cfm/test/probe up" "$watch"; }
wait_until 20 "the watcher subscribed" probe_seen

step "a run sleeps; the broker stops meanwhile"
pub a cfm/v1/sys/shop/event/own "{\"id\": \"ev-own-1\", \"payload\": {\"delay\": $DELAY, \"n\": 7}}"
run=$(run_id ev-own-1 site-a own)
wait_until 20 "run $run sleeping" run_is site-a "$run" waiting
stopped_at=$(now)
stop_broker a

step "with no broker, the run's own note reaches its wait and starts note_seen here"
wait_until 30 "run $run to succeed (site-a.log)" grep -q "run $run succeeded" "$TMP/site-a.log"
line=$(grep -m1 "rules: note on shop" "$TMP/site-a.log") || fail "the note started no run at site-a"
[[ "${line%% *}" > "$stopped_at" ]] ||
    fail "the note was handled at ${line%% *}, before the broker stopped at $stopped_at: raise DELAY"
seen=$(sed -E 's/.*starting (run-[0-9a-f]+).*/\1/' <<<"$line")
wait_until 30 "run $seen (note_seen) to succeed" grep -q "run $seen succeeded" "$TMP/site-a.log"
n=$(grep -c "rules: note on shop" "$TMP/site-a.log")
[ "$n" = 1 ] || fail "the note was handled $n times at site-a"

step "the broker is back: the note leaves through the outbox, and does not come back"
start_broker a
out=$(ctl site-a --json runs show "$run") || fail "runs show $run: $out"
note_id=$(tr -d ' ,' <<<"$out" | awk -F: '$1 == "\"published\"" { gsub("\"", "", $2); print $2; exit }')
[ -n "$note_id" ] || fail "run $run published no note: $out"
grep -q "\"got\": \"$note_id\"" <<<"$out" || fail "run $run did not get its own note: $out"
[ "$seen" = "$(run_id "$note_id" site-a note)" ] || fail "note_seen ran for another event than $note_id"
note_out() { grep -q "^cfm/v1/sys/shop/event/note .*\"id\":\"$note_id\"" "$watch"; }
wait_until 30 "the note $note_id at the watcher" note_out
# This request reaches the manager after the note's echo would have (the
# broker sent the note to the watcher before cfmctl asked).
out=$(ctl site-a runs list --system shop) || fail "runs list: $out"
[ "$(grep -c note_seen <<<"$out")" = 1 ] || fail "note_seen should have run once: $out"
! grep -q "event: event note on shop" "$TMP/site-a.log" ||
    fail "the note came back from the broker: $(grep "event: event note on shop" "$TMP/site-a.log")"
[ "$(grep -c "rules: note on shop" "$TMP/site-a.log")" = 1 ] ||
    fail "the note was handled again: $(grep "rules: note on shop" "$TMP/site-a.log")"

step "the manager stops cleanly"
stop_manager site-a || fail "site-a exited with $?"
pass
