#!/usr/bin/env bash
# Three managers, each on its own Mosquitto broker; brokers a and c are
# bridged to b (cfm/v1/# both ways, QoS 1, persistent bridge sessions).
# They agree on every object of a system: after a load, after concurrent
# writes of one object, after a member was down while 500 objects changed,
# after a partition with writes on both sides, and when a fourth site joins.
source "$(dirname "$0")/lib.sh"

bridge_to() {  # bridge_to NAME PEER: config lines for a bridge to broker PEER
    echo "connection $1-to-$2"
    echo "address 127.0.0.1:${BROKER_PORT[$2]}"
    echo "topic cfm/v1/# both 1"
    echo "cleansession false"
    echo "try_private true"
    echo "bridge_protocol_version mqttv50"
    echo "restart_timeout 1 2"
    echo "notifications true"
}

# snapshot SITE: every object of shop (tombstones too) as that site holds it.
snapshot() {
    ctl "$1" --json objects list --system shop --deleted
}

# agree SITE...: all sites hold byte-identical objects of shop.
agree() {
    local first
    first=$(snapshot "$1") || return 1
    shift
    for site in "$@"; do
        [ "$(snapshot "$site")" = "$first" ] || return 1
    done
}

sites_file() {  # sites_file OUT SITES-JSON: the example with another sites list
    sed -e "s/\"sites\": \[\"site-a\", \"site-b\"\]/\"sites\": $2/" \
        "$CFM_SRC/examples/web3tier.json" >"$1"
    grep -qF "\"sites\": $2" "$1" || fail "test setup: could not rewrite sites"
}

start_broker b
start_broker a "$(bridge_to a b)"
start_broker c "$(bridge_to c b)"
start_manager site-a a
start_manager site-b b
start_manager site-c c

sites_file "$TMP/shop3.json" '["site-a", "site-b", "site-c"]'

step "load at A: every object reaches B and C"
ctl site-a system load "$TMP/shop3.json" >/dev/null || fail "load at A"
has_objects() { [ "$(count_objects "$1" --system shop)" = "$2" ]; }
wait_until 20 "10 objects at B" has_objects site-b 10
wait_until 20 "A, B and C agree" agree site-a site-b site-c

step "concurrent updates of one object at A and B converge to one winner"
sed -e 's/"count": 2/"count": 4/' "$TMP/shop3.json" >"$TMP/a4.json"
sed -e 's/"count": 2/"count": 5/' "$TMP/shop3.json" >"$TMP/b5.json"
ctl site-a system load "$TMP/a4.json" >/dev/null &
load_a=$!
ctl site-b system load "$TMP/b5.json" >/dev/null &
load_b=$!
wait "$load_a" || fail "concurrent load at A"
wait "$load_b" || fail "concurrent load at B"
wait_until 20 "A, B and C agree after concurrent writes" agree site-a site-b site-c
web=$(ctl site-c --json objects list --system shop --kind BusinessSystemElement | grep -c '"count": [45]')
assert_eq 1 "$web" "one of the two counts won at C"

step "C is killed, 500 objects change at A, C restarts and converges"
kill_manager site-c
gen_many() {  # gen_many IN OUT N: IN plus N Address objects
    awk -v n="$3" '
        /"Address": \{/ && !done {
            print
            for (i = 1; i <= n; i++) printf "      \"addr-%d\": {\"pool\": \"public\"},\n", i
            done = 1; next
        }
        { print }' "$1" >"$2"
}
gen_many "$TMP/a4.json" "$TMP/many.json" 500
grep -q '"addr-500"' "$TMP/many.json" || fail "test setup: generator did not add addresses"
out=$(ctl site-a -t 30 system load "$TMP/many.json") || fail "load 500: $out"
assert_contains "$out" "500 created" "500 changes at A"
start_manager site-c c
wait_until 60 "C converges after the 500 changes" agree site-a site-b site-c
assert_eq 510 "$(count_objects site-c --system shop)" "objects at C"

step "partition: A's broker loses its bridge; both sides write; healing converges"
stop_broker a
start_broker a            # the same broker, persistent state, no bridge: A is cut off
wait_until 20 "A back on its broker" ctl site-a -t 0.5 ping
sed -e 's/"count": 4/"count": 6/' "$TMP/many.json" >"$TMP/a6.json"
sed -e 's/"count": 4/"count": 8/; s/"addr-7": {"pool": "public"},//' "$TMP/many.json" >"$TMP/b8.json"
out=$(ctl site-a system load "$TMP/a6.json") || fail "write at A during the partition: $out"
out=$(ctl site-b system load "$TMP/b8.json") || fail "write at B during the partition: $out"
assert_contains "$out" "1 deleted" "B deleted addr-7 during the partition"
agree site-a site-b && fail "A and B agree while partitioned (the partition did not hold)"
stop_broker a
start_broker a "$(bridge_to a b)"   # heal
wait_until 60 "A, B and C agree after the partition" agree site-a site-b site-c
snapshot site-a | grep -q '"addr-7"' || fail "the tombstone of addr-7 did not reach A"

step "a fourth site joins the system and catches up"
start_broker d "$(bridge_to d b)"
start_manager site-d d
# Every manager sees every system's BusinessSystem object (that is how it
# learns it joined); nothing else of a system it is not a member of.
wait_until 20 "D sees the system" has_objects site-d 1
assert_eq 0 "$(count_objects site-d --system shop --kind VMClass)" "VM classes at D before joining"
sed -e 's/"sites": \["site-a", "site-b", "site-c"\]/"sites": ["site-a", "site-b", "site-c", "site-d"]/' \
    "$TMP/a6.json" >"$TMP/a6d.json"
ctl site-a system load "$TMP/a6d.json" >/dev/null || fail "adding site-d"
wait_until 60 "D catches up" agree site-a site-d
n_a=$(count_objects site-a --system shop)
assert_eq "$n_a" "$(count_objects site-d --system shop)" "objects at D after joining"

step "a site removed from the system stops receiving its changes"
ctl site-a system load "$TMP/a6.json" >/dev/null || fail "removing site-d"
left() { ! ctl site-d --json system show shop | grep -q '"site-d"'; }
wait_until 20 "D sees that it left" left
sed -e 's/"count": 6/"count": 7/' "$TMP/a6.json" >"$TMP/a7.json"
ctl site-a system load "$TMP/a7.json" >/dev/null || fail "change after removal"
web_count_is() {
    ctl "$1" --json objects list --system shop --kind BusinessSystemElement | grep -q "\"count\": $2"
}
wait_until 20 "B sees the change" web_count_is site-b 7
ctl site-d --json objects list --system shop --kind BusinessSystemElement | grep -q '"count": 7' &&
    fail "D applied a change of a system it no longer belongs to"
assert_eq "$n_a" "$(count_objects site-d --system shop)" "D keeps its detached copy"
assert_contains "$(ctl site-d system list)" "detached" "D shows its copy as detached"
assert_contains "$(ctl site-a system list)" "member" "A is a member"

step "bad replicated input is dropped with a logged reason and never applied"
before=$(snapshot site-b)
obj='{"kind":"VMClass","id":"small","system":"%s","version":%s,"origin":"site-x","updated":"","deleted":false,"body":{"image":"evil","cpu":1,"memory_mb":1}}'
pub b cfm/v1/sys/shop/obj/VMClass/small "$(printf "$obj" shop 1099511627776)"
pub b cfm/v1/sys/shop/obj/VMClass/small "$(printf "$obj" other 999999)"
pub b cfm/v1/sys/shop/obj/VMClass/small '{"kind":"VMClass", truncated'
pub b cfm/v1/sys/shop/sync '{"from":"site-x","system":"shop","objects":{"VMClass/small":["x"]}}'
wait_until 10 "B logs the absurd version" grep -q "absurdly far ahead" "$TMP/site-b.log"
wait_until 10 "B logs the system mismatch" grep -q "the payload names other/VMClass/small" "$TMP/site-b.log"
wait_until 10 "B logs the malformed object" grep -q "dropped shop/VMClass/small: not JSON" "$TMP/site-b.log"
wait_until 10 "B logs the malformed digest" grep -q "dropped a digest of shop" "$TMP/site-b.log"
assert_eq "$before" "$(snapshot site-b)" "B's objects after bad input"
for site in site-a site-b site-c; do
    snapshot "$site" | grep -q evil && fail "$site applied a bad object"
done

pass
