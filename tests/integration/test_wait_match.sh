#!/usr/bin/env bash
# wait_cloud_event's match, value by value: procedures/match.lua waits seven
# times for a "probe" event; for each wait, decoys that differ in one field
# (type or value) are published before the event that matches. The first
# wait is offered the events live; the later ones find theirs among the
# events that arrived before the wait. The run's result lists the ids it got,
# in order: only the matching ones.
source "$(dirname "$0")/lib.sh"

one_site_shop '{"matchwait": {"script": "match.lua", "run_at": "site-a"}}'

step "a run waits for its first probe"
pub a cfm/v1/sys/shop/event/matchwait '{"id": "ev-match-1", "payload": {}}'
run=$(run_id ev-match-1 site-a matchwait)
wait_until 20 "run $run waiting" run_is site-a "$run" waiting

step "decoys, then the matching probe, for each of its seven waits"
probe() {  # probe ID PAYLOAD
    pub a cfm/v1/sys/shop/event/probe "{\"id\": \"$1\", \"payload\": $2}"
}
probe d1a '{"tag": "t1", "n": "2"}'
probe d1b '{"tag": "t1", "n": 2.5}'
probe d1c '{"tag": "t1"}'
probe m1 '{"tag": "t1", "n": 2.0}'
probe d2a '{"tag": "t2", "x": "1.5"}'
probe d2b '{"tag": "t2", "x": 1}'
probe m2 '{"tag": "t2", "x": 1.5, "extra": true}'
probe d3a '{"tag": "t3", "s": "bb"}'
probe d3b '{"tag": "t3", "s": ["b"]}'
probe d3c '{"tag": "t3x", "s": "b"}'
probe m3 '{"tag": "t3", "s": "b"}'
probe d4a '{"tag": "t4", "flag": 0}'
probe d4b '{"tag": "t4", "flag": true}'
probe d4c '{"tag": "t4", "flag": null}'
probe m4 '{"tag": "t4", "flag": false}'
probe d5a '{"tag": "t5", "obj": {"a": [1, 2, 3]}}'
probe d5b '{"tag": "t5", "obj": {"a": [1, 2], "b": 1}}'
probe d5c '{"tag": "t5", "obj": {"a": [1.0, 2.0]}}'
probe m5 '{"tag": "t5", "obj": {"a": [1, 2]}}'
probe d6a '{"tag": "t6", "z": 0}'
probe d6b '{"tag": "t6"}'
probe m6 '{"tag": "t6", "z": null}'
probe m7 '{"tag": "t7", "anything": [1]}'

wait_until 60 "run $run ended" run_ended site-a "$run"
assert_eq '"succeeded"' "$(run_field site-a "$run" state)" "state of $run"
assert_eq '{ "got": [ "m1", "m2", "m3", "m4", "m5", "m6", "m7" ] }' \
    "$(run_field site-a "$run" result)" "events the run got"
stop_manager site-a || fail "manager exit status $? on SIGTERM"
pass
