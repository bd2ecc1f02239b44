#!/usr/bin/env bash
# cfmctl as an operator and a script see it: exit status 0 on success, 1 with
# one line on stderr on a failure (no manager for the site, no broker), 2 on
# a usage error; --json output that parses; objects list filters; sites
# list; and events, whether published with cfmctl or by hand with
# mosquitto_pub, reach subscribers and the manager complete with id, origin
# and time.
source "$(dirname "$0")/lib.sh"

start_broker a
start_manager site-a a
PORT=${BROKER_PORT[a]}
LOG=$TMP/site-a.log
CFMCTL=$CFM_BUILD/cfmctl

# run EXPECTED-STATUS ARGS...: runs cfmctl ARGS, leaving stdout in OUT and
# stderr in ERR, and checks its exit status.
run() {
    local want=$1 rc=0
    shift
    "$CFMCTL" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    OUT=$(cat "$TMP/out")
    ERR=$(cat "$TMP/err")
    assert_eq "$want" "$rc" "exit status of cfmctl $* (stderr: $ERR)"
}

# one_line WHAT: stderr is exactly one line.
one_line() {
    assert_eq 1 "$(wc -l <"$TMP/err")" "$1: lines on stderr: $ERR"
}

# json_ok TEXT WHAT: TEXT is one JSON document (python3 when there is one;
# otherwise a rough check of its shape).
if command -v python3 >/dev/null 2>&1; then
    json_ok() {
        python3 -c 'import json,sys; json.load(sys.stdin)' <<<"$1" 2>"$TMP/json-err" ||
            fail "$2: not JSON ($(cat "$TMP/json-err")): $1"
    }
else
    echo "--- python3 not found: checking --json output by its shape only"
    json_ok() {
        case "$1" in
        "{"*"}" | "["*"]") ;;
        *) fail "$2: not a JSON object or array: $1" ;;
        esac
    }
fi

B=(-b "127.0.0.1:$PORT")

step "success is 0, on stdout, with nothing on stderr"
run 0 "${B[@]}" -s site-a ping
assert_eq "site site-a answered" "$OUT" "ping"
assert_eq "" "$ERR" "stderr of a successful ping"
run 0 --help
assert_contains "$OUT" "usage: cfmctl" "--help"
assert_eq "" "$ERR" "stderr of --help"

step "a site without a manager: 1, one line"
run 1 "${B[@]}" -s site-z -t 1 ping
one_line "no manager"
assert_contains "$ERR" "no manager answered for site site-z within 1 s" "no manager"
assert_eq "" "$OUT" "stdout when no manager answered"
run 1 "${B[@]}" -s site-z -t 1 --json objects list
assert_contains "$ERR" "no manager answered for site site-z within 1 s" "no manager (--json)"
assert_eq "" "$OUT" "stdout when no manager answered (--json)"

step "a closed broker port: 1, one line"
closed=$(free_port)
run 1 -b "127.0.0.1:$closed" -s site-a -t 2 ping
one_line "closed port"
assert_contains "$ERR" "cannot connect to the broker 127.0.0.1:$closed" "closed port"
run 1 -b "127.0.0.1:$closed" -t 2 event publish shop dr
assert_contains "$ERR" "cannot connect to the broker" "closed port (event publish)"

step "usage errors: 2"
run 2 "${B[@]}" -s site-a frobnicate
assert_contains "$ERR" "unknown or incomplete command" "unknown command"
run 2 "${B[@]}" -s site-a
assert_contains "$ERR" "unknown or incomplete command" "no command"
run 2 "${B[@]}" -s site-a system load
assert_contains "$ERR" "unknown or incomplete command" "system load without FILE"
run 2 "${B[@]}" -s site-a system show
run 2 "${B[@]}" -s site-a system show a b
run 2 "${B[@]}" -s site-a event publish shop
run 2 "${B[@]}" -s site-a event publish shop dr '{}' extra
run 2 "${B[@]}" -s site-a objects list --colour red
assert_contains "$ERR" "objects list: unexpected '--colour'" "objects list with an unknown flag"
run 2 "${B[@]}" -s site-a objects list --kind
run 2 "${B[@]}" -s site-a --frob ping
assert_contains "$ERR" "unknown option --frob" "unknown option"
run 2 "${B[@]}" -s
assert_contains "$ERR" "-s needs a value" "option without value"
run 2 "${B[@]}" -s site-a -t soon ping
assert_contains "$ERR" "-t: 'soon' is not a number of seconds" "bad -t"
run 2 "${B[@]}" -s site-a -t 0 ping
run 2 -b 127.0.0.1:99999 -s site-a ping
assert_contains "$ERR" "-b: '99999' is not a port from 1 to 65535" "bad -b"
run 2 "${B[@]}" -s a/b ping
assert_contains "$ERR" "-s: " "bad site"
assert_contains "$ERR" "'a/b' contains '/'" "bad site"
(unset CFM_SITE; run 2 "${B[@]}" ping; assert_contains "$ERR" "no site given" "no site") || exit 1
CFM_SITE=site-a run 0 "${B[@]}" ping
run 2 "${B[@]}" -s site-a event publish 'sh/op' dr
assert_contains "$ERR" "'sh/op' contains '/'" "event on a bad system"
run 2 "${B[@]}" -s site-a event publish shop dr 'not json'
assert_contains "$ERR" "event publish: payload is not JSON" "event with a bad payload"
run 2 "${B[@]}" -s site-a event publish shop dr '["site-b"]'
assert_contains "$ERR" "event publish: payload must be a JSON object" "event with an array payload"

step "a failure the manager reports: 1, one line with its reason"
run 1 "${B[@]}" -s site-a system show nope
one_line "system show nope"
assert_eq "cfmctl: no system 'nope' at site site-a" "$ERR" "system show nope"
run 1 "${B[@]}" -s site-a objects list --kind Foo
one_line "objects list --kind Foo"
assert_contains "$ERR" "unknown kind 'Foo'" "objects list --kind Foo"
run 1 "${B[@]}" -s site-a system load "$TMP/missing.json"
one_line "system load of a missing file"
assert_contains "$ERR" "$TMP/missing.json: No such file or directory" "missing file"

step "load the example; objects list filters by kind and by system"
run 0 "${B[@]}" -s site-a system load "$CFM_SRC/examples/web3tier.json"
assert_contains "$OUT" "10 created" "load"
run 0 "${B[@]}" -s site-a objects list --kind VMClass
assert_eq 3 "$(wc -l <<<"$OUT")" "objects list --kind VMClass: a header and two lines: $OUT"
assert_contains "$(sed -n 1p <<<"$OUT")" "KIND" "header of objects list"
grep -q '^shop  *VMClass  *small  ' <<<"$OUT" || fail "VMClass small not listed: $OUT"
grep -q '^shop  *VMClass  *medium  ' <<<"$OUT" || fail "VMClass medium not listed: $OUT"
run 0 "${B[@]}" -s site-a --json objects list --kind VMClass
json_ok "$OUT" "objects list --kind VMClass --json"
assert_eq 2 "$(grep -c '"kind": "VMClass"' <<<"$OUT")" "VMClass objects in --json"
assert_eq 2 "$(grep -c '"kind":' <<<"$OUT")" "objects in --json --kind VMClass"
run 0 "${B[@]}" -s site-a --json objects list --system shop
json_ok "$OUT" "objects list --system shop --json"
assert_eq 10 "$(grep -c '"kind":' <<<"$OUT")" "objects of shop"
run 0 "${B[@]}" -s site-a --json objects list --system shop --kind BusinessSystemElement
assert_eq 4 "$(grep -c '"kind": "BusinessSystemElement"' <<<"$OUT")" "elements of shop"
assert_eq 4 "$(grep -c '"kind":' <<<"$OUT")" "objects of shop, elements only"
run 0 "${B[@]}" -s site-a --json objects list --system other
json_ok "$OUT" "objects list --system other --json"
assert_eq 0 "$(grep -c '"kind":' <<<"$OUT" || true)" "objects of a system nobody loaded"
for cmd in "ping" "system list" "system show shop" "sites list"; do
    # shellcheck disable=SC2086
    run 0 "${B[@]}" -s site-a --json $cmd
    json_ok "$OUT" "--json $cmd"
done

step "sites list shows site-a online"
site_a_online() {
    "$CFMCTL" "${B[@]}" -s site-a sites list | grep -q '^site-a  *online  *20'
}
wait_until 10 "site-a online in sites list" site_a_online
run 0 "${B[@]}" -s site-a --json sites list
assert_contains "$OUT" '"site": "site-a"' "sites list --json"
assert_contains "$OUT" '"state": "online"' "sites list --json"

step "event publish reaches a subscriber started before it, completed"
mosquitto_sub -p "$PORT" -t cfm/v1/sys/shop/event/dr -t cfm/v1/test/probe -v -W 60 \
    >"$TMP/events" 2>&1 &
PIDS[sub]=$!
probe_seen() {
    mosquitto_pub -p "$PORT" -t cfm/v1/test/probe -m probe && grep -q '^cfm/v1/test/probe probe$' "$TMP/events"
}
wait_until 10 "the subscriber is subscribed" probe_seen
run 0 "${B[@]}" -s site-a --json event publish shop dr '{"target_site":"site-b"}'
json_ok "$OUT" "event publish --json"
id=$(sed -n 's/^ *"id": "\([0-9a-f-]*\)",*$/\1/p' <<<"$OUT")
[[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
    fail "event id '$id' is not a UUID: $OUT"
wait_until 10 "the event at the subscriber" grep -q "\"id\":\"$id\"" "$TMP/events"
got=$(grep "\"id\":\"$id\"" "$TMP/events")
assert_eq 1 "$(grep -c "\"id\":\"$id\"" "$TMP/events")" "copies of the event at the subscriber"
assert_contains "$got" 'cfm/v1/sys/shop/event/dr {' "topic of the event"
assert_contains "$got" '"type":"dr"' "event type"
assert_contains "$got" '"system":"shop"' "event system"
assert_contains "$got" '"origin":"site-a"' "event origin"
assert_contains "$got" '"payload":{"target_site":"site-b"}' "event payload"
[[ "$got" =~ \"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\" ]] ||
    fail "event time missing or not RFC 3339: $got"
if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
ev = json.loads(sys.argv[1].split(" ", 1)[1])
assert sorted(ev) == ["id", "origin", "payload", "system", "time", "type"], ev
assert ev["payload"] == {"target_site": "site-b"}, ev
' "$got" || fail "the received event: $got"
fi
wait_until 10 "the manager logs the event" grep -qF "event dr on shop (id $id, from site-a)" "$LOG"
run 0 "${B[@]}" -s site-a event publish shop dr
assert_contains "$OUT" "published event dr on shop (id " "event publish without payload"

step "the same event by hand, without id, origin or time: the manager completes it"
n=$(grep -c "event dr on shop (id " "$LOG")
pub a cfm/v1/sys/shop/event/dr '{"payload":{"target_site":"site-b"}}' || fail "mosquitto_pub"
more_events() { [ "$(grep -c "event dr on shop (id " "$LOG")" -gt "$n" ]; }
wait_until 10 "the manager logs the hand-made event" more_events
line=$(grep "event dr on shop (id " "$LOG" | tail -n 1)
[[ "$line" =~ \(id\ [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12},\ from\ site-a\)$ ]] ||
    fail "the hand-made event was not completed with a fresh id and this site: $line"
assert_eq 1 "$(grep -c "(id $id," "$LOG")" "the first event's id is logged once"
! grep -q "dropped event" "$LOG" || fail "an event was dropped: $(grep 'dropped event' "$LOG")"
# An empty message is an event too.
n=$(grep -c "event dr on shop (id " "$LOG")
mosquitto_pub -p "$PORT" -q 1 -t cfm/v1/sys/shop/event/dr -n || fail "mosquitto_pub -n"
wait_until 10 "the manager logs the empty event" more_events

manager_alive site-a || fail "the manager died"
stop_manager site-a || fail "manager exit status $? on SIGTERM"
pass
