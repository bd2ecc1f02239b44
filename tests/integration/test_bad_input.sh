#!/usr/bin/env bash
# Bad input never crashes the manager and never half-applies. With the
# example system loaded, every kind of broken system file (syntax error,
# unknown kind, missing required field, IDs with '/', '+', '#' or over 64
# characters, a dangling reference, over the size limit) is refused whole,
# both by cfmctl's local check and by the manager itself when the raw
# system.load request bypasses cfmctl; the answer names the position or the
# field, and the store is unchanged. Then garbage on every topic the manager
# listens to (ctl requests, events, objects, site status, topics with bad
# IDs) is dropped with a logged reason, and the manager keeps serving with
# the same objects.
source "$(dirname "$0")/lib.sh"

start_broker a
start_manager site-a a
PORT=${BROKER_PORT[a]}
EXAMPLE=$CFM_SRC/examples/web3tier.json
LOG=$TMP/site-a.log

# --- helpers -----------------------------------------------------------------

# The whole store as cfmctl shows it: every object of every system, with
# tombstones, versions and times. Equal snapshots mean nothing was written.
snapshot() {
    ctl site-a --json objects list --deleted || fail "objects list failed"
}

assert_store_unchanged() {  # assert_store_unchanged WHAT
    local now
    now=$(snapshot)
    [ "$now" = "$BASELINE" ] || {
        diff <(echo "$BASELINE") <(echo "$now") >&2
        fail "$1: the store changed"
    }
    assert_eq "$BASELINE_SITES" "$(ctl site-a sites list)" "$1: sites"
}

# variant NAME SED-SCRIPT: sets F to a copy of the example edited by
# SED-SCRIPT, which must change it. Every variant also raises web's count
# from 2 to 3 (a valid change), so a half-applied load would show in the store.
variant() {
    local out=$TMP/$1.json
    F=$out
    sed -e 's/"count": 2,/"count": 3,/' -e "$2" "$EXAMPLE" >"$out"
    grep -q '"count": 3,' "$out" || fail "test setup: $1: web count not changed"
    ! cmp -s <(sed -e 's/"count": 2,/"count": 3,/' "$EXAMPLE") "$out" ||
        fail "test setup: $1: '$2' changed nothing"
}

# load_refused FILE EXPECTED...: cfmctl refuses FILE with exit status 1 and one
# line on stderr naming the file and containing every EXPECTED text.
load_refused() {
    local file=$1 rc=0 err
    shift
    ctl site-a system load "$file" >"$TMP/out" 2>"$TMP/err" || rc=$?
    err=$(cat "$TMP/err")
    assert_eq 1 "$rc" "cfmctl system load $(basename "$file") exit status (stderr: $err)"
    assert_eq 1 "$(wc -l <"$TMP/err")" "lines on stderr for $(basename "$file"): $err"
    assert_eq "" "$(cat "$TMP/out")" "stdout of a refused load"
    assert_contains "$err" "cfmctl: $file: " "cfmctl names the file"
    for want in "$@"; do
        assert_contains "$err" "$want" "cfmctl's reason for $(basename "$file")"
    done
    assert_store_unchanged "after cfmctl refused $(basename "$file")"
}

# json_text FILE: FILE's content as the inside of a JSON string.
json_text() {
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' "$1" |
        awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }'
}

# load_request FILE: the system.load request cfmctl would send for FILE,
# written to FILE.req (set in REQ), without cfmctl's local check.
load_request() {
    REQ=$1.req
    {
        printf '{"op":"system.load","args":{"file":"x.json","text":"'
        json_text "$1"
        printf '"}}'
    } >"$REQ"
}

# raw_request FILE: publishes FILE's content on site-a's ctl topic with
# mosquitto_pub (MQTT 5, a response topic of our own), bypassing cfmctl, and
# sets ANSWER to the manager's answer. (mosquitto_rr 2.0.11 sends an empty
# message for -f and -s, and -m cannot carry a file over 128 KiB.)
RAW_N=0
ANSWER=
probe_seen() {  # probe_seen TOPIC OUTFILE
    mosquitto_pub -p "$PORT" -t "$1" -m probe && grep -q "^$1 probe$" "$2"
}
raw_request() {
    local resp out
    RAW_N=$((RAW_N + 1))
    resp=cfm/v1/ctl/res/bad-input-$$-$RAW_N
    out=$TMP/raw-$RAW_N.out
    : >"$out"
    mosquitto_sub -V 5 -p "$PORT" -t "$resp" -t "$resp/probe" -v -W 60 >"$out" 2>&1 &
    PIDS[raw-sub]=$!
    wait_until 10 "the response subscriber" probe_seen "$resp/probe" "$out"
    mosquitto_pub -V 5 -p "$PORT" -q 1 -t cfm/v1/site/site-a/ctl/req \
        -D publish response-topic "$resp" -f "$1" || fail "mosquitto_pub of $1 failed"
    wait_until 10 "the manager's answer on $resp" grep -q "^$resp " "$out"
    kill "${PIDS[raw-sub]}" 2>/dev/null
    wait "${PIDS[raw-sub]}" 2>/dev/null
    unset 'PIDS[raw-sub]'
    ANSWER=$(sed -n "s|^$resp ||p" "$out")
}

# raw_refused FILE EXPECTED...: the manager answers FILE (a raw request)
# with ok false and an error containing every EXPECTED text.
raw_refused() {
    local file=$1
    shift
    raw_request "$file"
    assert_contains "$ANSWER" '{"ok":false,"error":"' "answer to $(basename "$file")"
    for want in "$@"; do
        assert_contains "$ANSWER" "$want" "the manager's reason for $(basename "$file")"
    done
}

# raw_load_refused FILE EXPECTED...: the raw system.load of FILE is refused
# with EXPECTED, the error names the file, and the store is unchanged.
raw_load_refused() {
    local file=$1
    shift
    load_request "$file"
    raw_refused "$REQ" '"error":"x.json: ' "$@"
    assert_store_unchanged "after the manager refused $(basename "$file")"
}

# in_log TEXT: the manager's log has a line containing TEXT.
in_log() {
    grep -qF -- "$1" "$LOG"
}

# dropped TEXT: waits for the manager's log line explaining a drop.
dropped() {
    wait_until 10 "the manager to log: $1" in_log "$1"
}

log_count() {
    grep -cF -- "$1" "$LOG"
}

# pub_dropped TOPIC PAYLOAD TEXT: publishes PAYLOAD on TOPIC and waits for a
# new log line containing TEXT (one more than before the publish).
pub_dropped() {
    local n
    n=$(log_count "$3")
    pub a "$1" "$2" || fail "publish on $1"
    wait_until 10 "the manager to log (again): $3" logged_more "$3" "$n"
}

logged_more() {  # logged_more TEXT N: more than N log lines contain TEXT
    [ "$(log_count "$1")" -gt "$2" ]
}

site_a_online() {
    ctl site-a sites list | grep -q '^site-a *online'
}

# --- a valid system first -----------------------------------------------------

step "load the example system; its snapshot is the baseline"
out=$(ctl site-a system load "$EXAMPLE") || fail "load: $out"
assert_contains "$out" "10 created" "first load"
wait_until 10 "site-a online in sites list" site_a_online
BASELINE=$(snapshot)
BASELINE_SITES=$(ctl site-a sites list)
assert_eq 10 "$(grep -c '"kind":' <<<"$BASELINE")" "objects in the baseline"
assert_eq "$BASELINE" "$(snapshot)" "two snapshots of an idle store"

# --- broken system files through cfmctl and raw -------------------------------

step "a syntax error: refused with its line and column"
variant syntax 's/"cpu": 1,/"cpu": 1,,/'
assert_eq 24 "$(grep -n '"cpu": 1,,' "$F" | cut -d: -f1)" "test setup: line of the syntax error"
load_refused "$F" "line 24, column 18: "
raw_load_refused "$F" "line 24, column 18: "

step "an unknown kind"
variant kind 's/"Address": {/"Adress": {/'
load_refused "$F" "objects: unknown kind 'Adress' (known: BusinessSystem,"
raw_load_refused "$F" "objects: unknown kind 'Adress' (known: BusinessSystem,"

step "a missing required field"
variant missing '23{/"image": "cfm-local",/d}'
load_refused "$F" "objects.VMClass.small.image: is required"
raw_load_refused "$F" "objects.VMClass.small.image: is required"
variant nosites '/"sites": \["site-a", "site-b"\],/d'
load_refused "$F" "sites: is required"
raw_load_refused "$F" "sites: is required"

step "IDs with '/', '+', '#' or over 64 characters"
long=$(printf 'l%.0s' {1..65})
for bad in "sm/all:/:slash" "sm+all:+:plus" "sm#all:#:hash"; do
    IFS=: read -r id char name <<<"$bad"
    variant "id-$name" "s|\"small\": {|\"$id\": {|"
    load_refused "$F" "objects.VMClass: VMClass id '$id' contains '$char'"
    raw_load_refused "$F" "objects.VMClass: VMClass id '$id' contains '$char'"
done
variant id-long "s|\"small\": {|\"$long\": {|"
load_refused "$F" "objects.VMClass: VMClass id 'llllllllllllllll" "is longer than 64 characters"
raw_load_refused "$F" "objects.VMClass: VMClass id 'llllllllllllllll" "is longer than 64 characters"
variant sysid 's|"id": "shop",|"id": "sh/op",|'
load_refused "$F" "id: " "'sh/op' contains '/'"
raw_load_refused "$F" "id: " "'sh/op' contains '/'"
variant ref-id 's|"depends_on": \["db"\]|"depends_on": ["d#b"]|'
load_refused "$F" "objects.BusinessSystemElement.web.depends_on[0]" "'d#b' contains '#'"
raw_load_refused "$F" "objects.BusinessSystemElement.web.depends_on[0]" "'d#b' contains '#'"

step "a dangling reference: an element naming an unknown VM class"
variant dangling 's/"vm_class": "medium"/"vm_class": "large"/'
want="objects.BusinessSystemElement.db.vm_class: VMClass 'large' is not defined in this file"
load_refused "$F" "$want"
raw_load_refused "$F" "$want"

step "a file over the size limit (valid JSON padded with blanks)"
f=$TMP/huge.json
{
    sed -e 's/"count": 2,/"count": 3,/' "$EXAMPLE"
    for _ in $(seq 1100); do printf '%1023s\n' ''; done
} >"$f"
size=$(wc -c <"$f")
[ "$size" -gt 1048576 ] || fail "test setup: $f is only $size bytes"
load_refused "$f" "$size bytes; the limit is 1048576"
load_request "$f"
raw_refused "$REQ" "\"error\":\"request is $(wc -c <"$REQ") bytes; the limit is 1048576\""
assert_store_unchanged "after the manager refused $(basename "$REQ")"

step "the raw path itself works: a valid raw load changes nothing, a foreign system is refused"
cp "$EXAMPLE" "$TMP/example.json"
load_request "$TMP/example.json"
raw_request "$REQ"
assert_contains "$ANSWER" '{"ok":true,' "raw load of the example"
assert_contains "$ANSWER" '"unchanged":10' "raw load of the example"
assert_store_unchanged "after a raw load of the same file"
variant foreign 's/"sites": \["site-a", "site-b"\],/"sites": ["site-b", "site-d"],/; s/"primary": "site-a"/"primary": "site-d"/'
raw_load_refused "$F" "this site (site-a) is not among the sites of system shop"

step "malformed requests on the ctl topic are answered with the reason"
ctl_garbage() { printf '%s' "$1" >"$TMP/req.json"; raw_refused "$TMP/req.json" "$2"; }
ctl_garbage '{"op":' 'request is not JSON: line 1, column 6: '
ctl_garbage '[1,2]' 'request needs {\"op\": string, \"args\": object}'
ctl_garbage '"ping"' 'request is not JSON: line 1, column 6: '
ctl_garbage '{"op":5}' 'request needs {\"op\": string, \"args\": object}'
ctl_garbage '{"op":"system.drop","args":{}}' "unknown op 'system.drop' (known: ping,"
ctl_garbage '{"op":"ping","args":[]}' "'args' must be an object"
ctl_garbage '{"op":"ping","op":"ping"}' 'request is not JSON: '
ctl_garbage '{"op":"system.load","args":{"file":"x.json","text":7}}' "argument 'text' (the file's content) must be a string"
ctl_garbage '{"op":"system.load","args":{"file":"x.json"}}' "argument 'text' (the file's content) must be a string"
ctl_garbage '{"op":"system.load","args":{"file":"x.json","text":"{}"}}' '"error":"x.json: '
ctl_garbage '{"op":"system.show","args":{"id":"a/b"}}' "id 'a/b' contains '/'"
ctl_garbage '{"op":"objects.list","args":{"kind":"Foo"}}' "unknown kind 'Foo'"
: >"$TMP/req.json"
raw_refused "$TMP/req.json" "request is empty"
head -c 1048577 /dev/zero | tr '\0' ' ' >"$TMP/req.json"
raw_refused "$TMP/req.json" "request is 1048577 bytes; the limit is 1048576"
assert_store_unchanged "after malformed requests"

step "requests without a usable response topic are dropped and logged"
mosquitto_pub -p "$PORT" -q 1 -t cfm/v1/site/site-a/ctl/req -m '{"op":"ping"}' ||
    fail "publish without response topic (MQTT 3.1.1)"
dropped "dropped a request without an MQTT 5 response topic"
mosquitto_pub -V 5 -p "$PORT" -q 1 -t cfm/v1/site/site-a/ctl/req -m '{"op":"ping"}' \
    -D publish response-topic 'cfm/v1/ctl/res/#' || fail "publish with a wildcard response topic"
dropped "dropped a request with an invalid response topic"
# A response topic inside cfm/v1 (other than ctl/res) is refused: an answer
# must never pose as an object, event or status.
before_retained=$(mosquitto_sub -p "$PORT" -t cfm/v1/sys/shop/obj/VMClass/small -C 1 -W 1)
n_invalid=$(grep -c "dropped a request with an invalid response topic" "$TMP/site-a.log")
mosquitto_pub -V 5 -p "$PORT" -q 1 -t cfm/v1/site/site-a/ctl/req -m '{"op":"ping"}' \
    -D publish response-topic cfm/v1/sys/shop/obj/VMClass/small || fail "publish"
more_invalid() {
    [ "$(grep -c "dropped a request with an invalid response topic" "$TMP/site-a.log")" -gt "$n_invalid" ]
}
wait_until 10 "the manager to refuse a response topic inside cfm/v1" more_invalid
assert_eq "$before_retained" "$(mosquitto_sub -p "$PORT" -t cfm/v1/sys/shop/obj/VMClass/small -C 1 -W 1)" \
    "the retained object after a request answering onto its topic"
assert_store_unchanged "after requests without response topic"

# --- garbage on the topics the manager listens to ----------------------------

step "garbage events on cfm/v1/sys/shop/event/x"
ev=cfm/v1/sys/shop/event/x
pub a $ev '{"payload":' || fail "publish"
dropped "dropped event x on shop: event is not JSON: line 1, column 11: "
pub a $ev '[1]'
dropped "dropped event x on shop: event must be a JSON object"
pub a $ev '{"payload":{},"extra":1}'
dropped "dropped event x on shop: unknown event field 'extra'"
pub a $ev '{"system":"other"}'
dropped "dropped event x on shop: event field 'system' is 'other' but the topic says 'shop'"
pub a $ev '{"type":"y"}'
dropped "dropped event x on shop: event field 'type' is 'y' but the topic says 'x'"
pub a $ev '{"id":"a/b"}'
dropped "dropped event x on shop: event id 'a/b' contains '/'"
pub a $ev "{\"id\":\"$long\"}"
dropped "dropped event x on shop: event id 'llllllllllllllll"
pub a $ev '{"time":"yesterday"}'
dropped "dropped event x on shop: event time 'yesterday' is not RFC 3339 UTC"
pub a $ev '{"payload":"site-b"}'
dropped "dropped event x on shop: event payload must be a JSON object"
{ printf '{"payload":{"k":"'; head -c 1048576 /dev/zero | tr '\0' x; printf '"}}'; } >"$TMP/big-event"
mosquitto_pub -p "$PORT" -q 1 -t $ev -f "$TMP/big-event" || fail "publish"
dropped "dropped event x on shop: event is $(wc -c <"$TMP/big-event") bytes; the limit is 1048576"
# The same topic takes a good event: the drops above were for what they held.
pub a $ev '{"payload":{"target_site":"site-b"}}'
dropped "event x on shop (id "

step "garbage objects on cfm/v1/sys/shop/obj/VMClass/small"
obj=cfm/v1/sys/shop/obj/VMClass/small
# envelope SYSTEM VERSION [KIND BODY]: an object "small" that would win over
# the stored VMClass small, were it accepted.
envelope() {
    local kind=${3:-VMClass} body=${4:-}
    [ -n "$body" ] || body='{"image":"evil","cpu":64,"memory_mb":65536}'
    printf '{"kind":"%s","id":"small","system":"%s","version":%s,"origin":"site-x",' \
        "$kind" "$1" "$2"
    printf '"updated":"2026-11-22T10:00:00.000Z","deleted":false,"body":%s}' "$body"
}
pub_dropped $obj '{"kind":"VMClass",' "dropped shop/VMClass/small: not JSON: "
pub_dropped $obj '["VMClass"]' "dropped shop/VMClass/small: must be a JSON object"
pub_dropped $obj "$(envelope other 1000)" "dropped shop/VMClass/small: the payload names other/VMClass/small"
pub_dropped $obj "$(envelope shop 1000 Volume '{"size_mb":1}')" "dropped shop/VMClass/small: the payload names shop/Volume/small"
version_range="dropped shop/VMClass/small: version: must be an integer from 0 to 9007199254740991"
pub_dropped $obj "$(envelope shop 1e300)" "$version_range"
pub_dropped $obj "$(envelope shop -1)" "$version_range"
pub_dropped $obj "$(envelope shop 9007199254740992)" "$version_range"
pub_dropped $obj "$(envelope shop 1000.5)" "$version_range"
pub_dropped $obj "$(envelope shop '"1000"')" "$version_range"
pub_dropped $obj "$(envelope shop 99999999999999999999)" "dropped shop/VMClass/small: not JSON: too big integer"
# In range, but one forged message would exhaust every site's Lamport clock.
pub_dropped $obj "$(envelope shop 9007199254740991)" \
    "dropped shop/VMClass/small: version 9007199254740991 is absurdly far ahead of this site's clock"
pub_dropped $obj '{"kind":"VMClass","id":"small","system":"shop","version":1000,"origin":"site-x","body":{"image":"evil","cpu":0,"memory_mb":1}}' \
    "dropped shop/VMClass/small: body.cpu: must be an integer from 1 to 1024"
pub_dropped $obj '{"kind":"VMClass","id":"small","system":"shop","body":{"image":"evil","cpu":1,"memory_mb":1}}' \
    "dropped shop/VMClass/small: a replicated object needs a version and origin"
pub_dropped $obj '{"kind":"VMClass","id":"small","system":"shop","version":1000,"origin":"a/b","body":{"image":"evil","cpu":1,"memory_mb":1}}' \
    "dropped shop/VMClass/small: origin: site id 'a/b' contains '/'"
{ printf '{"kind":"VMClass","id":"small","system":"shop","version":1000,"origin":"site-x","body":{"image":"evil","cpu":1,"memory_mb":1,"description":"'
  head -c 1048576 /dev/zero | tr '\0' d; printf '"}}'; } >"$TMP/big-obj"
mosquitto_pub -p "$PORT" -q 1 -t $obj -f "$TMP/big-obj" || fail "publish"
dropped "dropped shop/VMClass/small: $(wc -c <"$TMP/big-obj") bytes is over the limit"
mosquitto_pub -p "$PORT" -q 1 -t cfm/v1/sys/shop/obj/Foo/small -m "$(envelope shop 1000 Foo)" || fail "publish"
dropped "dropped shop/Foo/small: kind: unknown kind 'Foo'"
assert_store_unchanged "after garbage objects"

step "garbage site status on cfm/v1/site/x/status"
needs='dropped status of x: needs {"state": "online"|"offline"}'
pub_dropped cfm/v1/site/x/status 'garbage' "$needs"
pub_dropped cfm/v1/site/x/status '{"state":"sleepy"}' "$needs"
pub_dropped cfm/v1/site/x/status '["online"]' "$needs"
status="{\"state\":\"online\",\"pad\":\"$(printf 'p%.0s' {1..5000})\"}"
pub_dropped cfm/v1/site/x/status "$status" "dropped status of x: ${#status} bytes is over 4096"
assert_store_unchanged "after garbage status"

step "topics with bad IDs"
# shellcheck disable=SC2016 # a literal '$' in the topic
pub a 'cfm/v1/sys/shop/event/bad$type' '{}'
dropped "dropped a message: topic level 'bad\$type' contains '\$'"
pub a "cfm/v1/sys/shop/event/$long" '{}'
dropped "dropped a message: topic 'cfm/v1/sys/shop/event/$long' is not a cfm/v1 topic"
pub a "cfm/v1/sys/shop/obj/VMClass/$long" "$(envelope shop 1000)"
dropped "dropped a message: topic 'cfm/v1/sys/shop/obj/VMClass/$long' is not a cfm/v1 topic"
pub a 'cfm/v1/sys/shop/obj/VMClass/small/extra' "$(envelope shop 1000)"
dropped "dropped a message: topic 'cfm/v1/sys/shop/obj/VMClass/small/extra' is not a cfm/v1 topic"
pub a 'cfm/v1/sys/shop/obj/VMClass/' "$(envelope shop 1000)"
dropped "dropped a message: topic level is empty"
pub a 'cfm/v1/site/bad site/status' '{"state":"online"}'
dropped "dropped a message: topic level 'bad site' contains ' '"
pub a "cfm/v1/site/$long/status" '{"state":"online"}'
dropped "dropped a message: topic 'cfm/v1/site/$long/status' is not a cfm/v1 topic"
pub a 'cfm/v1/sys/shop/sync' 'garbage'  # another module's topic: must not crash

# --- after all of it ------------------------------------------------------------

step "the manager is alive, answers, and holds exactly what it held"
manager_alive site-a || fail "the manager died"
out=$(ctl site-a ping) || fail "ping: $out"
assert_eq "site site-a answered" "$out" "ping"
assert_store_unchanged "at the end"
assert_eq 10 "$(count_objects site-a --system shop)" "objects of shop"
! grep -q 'ERROR\|AddressSanitizer\|runtime error' "$LOG" || {
    grep 'ERROR\|AddressSanitizer\|runtime error' "$LOG" >&2
    fail "the manager logged errors"
}

step "and it still takes a valid change"
f=$TMP/valid.json
sed -e 's/"count": 2,/"count": 3,/' "$EXAMPLE" >"$f"
out=$(ctl site-a system load "$f" 2>&1) || fail "valid load: $out"
assert_contains "$out" "0 created, 1 updated, 0 deleted, 9 unchanged" "valid load after the garbage"

step "and a valid newer object on the topic that took the garbage wins"
pub a $obj "$(envelope shop 1000)"
small_replaced() {
    ctl site-a objects list --kind VMClass | grep -q '^shop  *VMClass  *small  *1000 site-x '
}
wait_until 10 "VMClass small at version 1000 from site-x" small_replaced

stop_manager site-a || fail "manager exit status $? on SIGTERM"
pass
