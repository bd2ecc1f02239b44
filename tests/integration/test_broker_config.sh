#!/usr/bin/env bash
# The shipped broker configuration (broker-config/: mosquitto.conf, acl,
# bridge-to-PEER.conf.example), rendered by scripts/gen-broker-config.sh
# exactly as scripts/federation-up.sh does, on three real brokers in a full
# mesh with real managers:
#   1. authentication: anonymous clients and wrong passwords are refused; a
#      manager with its password connects and answers cfmctl as operator;
#   2. ACL: a manager cannot publish another site's status, an agent nothing
#      outside its own topics, an operator no objects; what the ACL allows
#      does arrive, what it forbids never does (bounded by a marker); a real
#      cfm-agent logs in with its own user and publishes its status;
#   3. bridging: a system loaded at site-a reaches site-b's manager and the
#      broker of site-c; a message published at site-a arrives exactly once
#      at every broker (no loop in the mesh); cfmctl reaches a manager
#      through another site's broker; a stopped broker is seen as a down
#      link, and what it missed arrives when it is back, and its site counts
#      as online again.
source "$(dirname "$0")/lib.sh"

FED=$TMP/fed
SITES=(site-a site-b site-c)

# --- helpers (this test's brokers use the generated configuration) ------------

pw() { cat "$FED/secrets/$1.pw"; }

fed_start_broker() {  # SITE: the generated broker of SITE, on its port
    local site=$1
    mosquitto -c "$FED/$site/mosquitto.conf" >>"$TMP/broker-$site.log" 2>&1 &
    PIDS[broker-$site]=$!
    wait_until 10 "broker $site listening on ${BROKER_PORT[$site]}" port_open "${BROKER_PORT[$site]}"
}

# octl SITE [-b BROKER-SITE] ARGS...: cfmctl as operator against SITE's
# manager, through SITE's broker or BROKER-SITE's.
octl() {
    local site=$1 via=$1
    shift
    if [ "${1:-}" = -b ]; then
        via=$2
        shift 2
    fi
    "$CFM_BUILD/cfmctl" -b "127.0.0.1:${BROKER_PORT[$via]}" -u operator \
        -P "$FED/secrets/operator.pw" -s "$site" "$@"
}

fed_start_manager() {  # SITE: a manager authenticating as SITE
    local site=$1
    MANAGER_BROKER[$site]=$site
    "$CFM_BUILD/cfm-manager" --site "$site" --broker "127.0.0.1:${BROKER_PORT[$site]}" \
        --username "$site" --password-file "$FED/secrets/$site.pw" \
        --state-dir "$TMP/$site" >>"$TMP/$site.log" 2>&1 &
    PIDS[manager-$site]=$!
    wait_until 15 "manager $site answering" octl "$site" -t 1 ping
}

# as USER BROKER-SITE mosquitto_pub|mosquitto_sub ARGS...: an MQTT 5 client
# logged in as USER on BROKER-SITE's broker.
as() {
    local user=$1 site=$2 prog=$3
    shift 3
    "$prog" -V mqttv5 -p "${BROKER_PORT[$site]}" -u "$user" -P "$(pw "$user")" "$@"
}

# watch NAME USER BROKER-SITE TOPIC: a subscriber writing "topic payload"
# lines to $TMP/NAME.out, in the background; until_seen tells when it is
# subscribed.
watch() {
    local name=$1 user=$2 site=$3 topic=$4
    : >"$TMP/$name.out"
    # Not through `as`: $! must be mosquitto_sub's pid, not a subshell's,
    # or killing it leaves the subscriber running.
    mosquitto_sub -V mqttv5 -p "${BROKER_PORT[$site]}" -u "$user" -P "$(pw "$user")" \
        -q 1 -t "$topic" -v >>"$TMP/$name.out" 2>>"$TMP/$name.err" &
    PIDS[watch-$name]=$!
}

unwatch() {
    kill "${PIDS[watch-$1]}" 2>/dev/null
    wait "${PIDS[watch-$1]}" 2>/dev/null
    unset "PIDS[watch-$1]"
}

seen() {  # seen NAME TEXT: TEXT is in the output of watcher NAME
    grep -qF -- "$2" "$TMP/$1.out"
}

count() {  # count NAME TEXT: how many lines of watcher NAME hold TEXT
    grep -cF -- "$2" "$TMP/$1.out" || true
}

# until_seen LIMIT NAME USER SITE TOPIC PAYLOAD: publishes PAYLOAD on TOPIC
# (as USER at SITE) until watcher NAME has it: a subscriber is ready, or a
# path is up, once a probe gets through.
until_seen() {
    local limit=$1 name=$2 user=$3 site=$4 topic=$5 payload=$6
    local deadline=$((SECONDS + limit))
    until seen "$name" "$payload"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for '$payload' at $name"
        as "$user" "$site" mosquitto_pub -q 1 -t "$topic" -m "$payload" 2>/dev/null
        sleep 0.2
    done
}

# link_state FROM TO [AT]: the retained state (1 up, 0 down) of the bridge
# FROM -> TO, as seen at AT's broker (site-c's by default).
link_state() {
    local at=${3:-site-c}
    as "$at" "$at" mosquitto_sub -t "cfm/v1/bridge/$1/$2/state" -C 1 -W 1 2>/dev/null
}

link_is() {  # link_is FROM TO STATE [AT]
    [ "$(link_state "$1" "$2" "${4:-site-c}")" = "$3" ]
}

retained_count() {  # retained_count USER SITE TOPIC: retained messages matching TOPIC
    as "$1" "$2" mosquitto_sub -t "$3" --retained-only -W 1 2>/dev/null | wc -l
}

# --- the federation ---------------------------------------------------------------

step "render broker-config/ for three sites"
args=()
for site in "${SITES[@]}"; do
    BROKER_PORT[$site]=$(free_port)
    while [ "$(printf '%s\n' "${BROKER_PORT[@]}" | sort | uniq -d)" ]; do
        BROKER_PORT[$site]=$(free_port)
    done
    args+=("$site=${BROKER_PORT[$site]}")
done
"$CFM_SRC/scripts/gen-broker-config.sh" local "$FED" --agent site-a:vm1 "${args[@]}" ||
    fail "gen-broker-config.sh local failed"
for site in "${SITES[@]}"; do
    [ -f "$FED/$site/mosquitto.conf" ] || fail "no mosquitto.conf for $site"
    [ "$(ls "$FED/$site/bridges.d" | wc -l)" = 2 ] || fail "$site: expected two bridges"
done
step "start the brokers; every link of the mesh comes up"
for site in "${SITES[@]}"; do fed_start_broker "$site"; done
# A bridge that found its peer not yet listening retries with a growing
# delay (restart_timeout 1 30): wait for every link, as its retained state
# seen at each broker, before counting on the mesh.
mesh_up() {
    local at from to
    for at in "${SITES[@]}"; do
        for from in "${SITES[@]}"; do
            for to in "${SITES[@]}"; do
                [ "$from" = "$to" ] || link_is "$from" "$to" 1 "$at" || return 1
            done
        done
    done
}
wait_until 90 "all six links of the mesh up, as seen from every site" mesh_up

# --- 1. authentication --------------------------------------------------------------

step "anonymous clients and wrong passwords are refused"
out=$(mosquitto_pub -p "${BROKER_PORT[site-a]}" -q 1 -t cfm/v1/sys/x/event/y -m anon 2>&1) &&
    fail "an anonymous publish was accepted"
assert_contains "$out" "not authorised" "anonymous publish"
out=$(mosquitto_pub -p "${BROKER_PORT[site-a]}" -u site-a -P wrong -q 1 -t cfm/v1/x -m x 2>&1) &&
    fail "a wrong password was accepted"
assert_contains "$out" "not authorised" "wrong password"
out=$("$CFM_BUILD/cfmctl" -b "127.0.0.1:${BROKER_PORT[site-a]}" -s site-a -t 2 ping 2>&1) &&
    fail "cfmctl without credentials was accepted"
assert_contains "$out" "refused" "cfmctl without credentials"

step "a manager with a wrong password is refused, and says so"
echo wrong >"$TMP/wrong.pw"
"$CFM_BUILD/cfm-manager" --site site-c --broker "127.0.0.1:${BROKER_PORT[site-c]}" \
    --username site-c --password-file "$TMP/wrong.pw" --state-dir "$TMP/site-c-wrong" \
    >>"$TMP/site-c-wrong.log" 2>&1 &
PIDS[manager-wrong]=$!
wait_until 10 "the refused manager logging it" grep -q "refused the connection" "$TMP/site-c-wrong.log"
kill -KILL "${PIDS[manager-wrong]}" && wait "${PIDS[manager-wrong]}" 2>/dev/null
unset "PIDS[manager-wrong]"

step "managers with their passwords connect and answer cfmctl as operator"
fed_start_manager site-a
fed_start_manager site-b
assert_contains "$(octl site-a ping)" "site site-a answered" "ping site-a"
site_a_online_at_c() {
    as site-c site-c mosquitto_sub -t cfm/v1/site/site-a/status -C 1 -W 1 2>/dev/null |
        grep -q '"online"'
}
wait_until 15 "site-a's retained status online at site-c's broker" site_a_online_at_c

# --- 2. ACL ---------------------------------------------------------------------------

step "ACL: forbidden publishes never arrive, allowed ones do"
watch obs site-a site-a 'cfm/v1/#'
until_seen 10 obs site-a site-a cfm/v1/site/site-a/probe ready-obs
out=$(as site-a site-a mosquitto_pub -q 1 -t cfm/v1/site/site-b/status \
    -m '{"state":"offline","forged":"by-site-a"}' 2>&1)
assert_contains "$out" "Not authorized" "site-a publishing site-b's status"
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/sys/shop/obj/VMClass/small -m forged-by-agent 2>/dev/null
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/sys/shop/event/dr -m forged-by-agent 2>/dev/null
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm2/status -m forged-by-agent 2>/dev/null
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/site/site-a/ctl/req -m forged-by-agent 2>/dev/null
as operator site-a mosquitto_pub -q 1 -t cfm/v1/sys/shop/obj/VMClass/small -m forged-by-operator 2>/dev/null
as operator site-a mosquitto_pub -q 1 -t cfm/v1/site/site-a/status -m forged-by-operator 2>/dev/null
as operator site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm1/req -m forged-by-operator 2>/dev/null
as bridge-site-b site-a mosquitto_pub -q 1 -t cfm/v1/sys/shop/event/dr -m forged-by-bridge 2>/dev/null
as relay site-a mosquitto_pub -q 1 -t cfm/v1/sys/acltest/event/relay -m allowed-relay 2>/dev/null
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm1/status -m allowed-agent-status
as agent-vm1 site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm1/res/42 -m allowed-agent-res
as operator site-a mosquitto_pub -q 1 -t cfm/v1/sys/acltest/event/noop -m allowed-operator
as site-a site-a mosquitto_pub -q 1 -t cfm/v1/sys/acltest/run/r1 -m allowed-manager
# One publisher's messages reach a subscriber in order, and each publish
# above was acknowledged before the next began: once the marker is in, every
# earlier message that was going to arrive has.
until_seen 10 obs site-a site-a cfm/v1/site/site-a/probe marker-1
for ok in allowed-relay allowed-agent-status allowed-agent-res allowed-operator allowed-manager; do
    seen obs "$ok" || fail "ACL: $ok did not arrive"
done
if grep -q forged "$TMP/obs.out"; then
    fail "ACL: forbidden messages arrived: $(grep forged "$TMP/obs.out")"
fi
unwatch obs

step "ACL: an agent reads only its own requests; an operator neither objects nor others' answers"
watch agent agent-vm1 site-a 'cfm/v1/#'
until_seen 10 agent site-a site-a cfm/v1/agent/vm1/req ready-agent
as site-a site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm2/req -m secret-for-vm2
as site-a site-a mosquitto_pub -q 1 -r -t cfm/v1/sys/acltest/obj/VMClass/x -m secret-object
watch spy operator site-a 'cfm/v1/#'
until_seen 10 spy operator site-a cfm/v1/sys/acltest/event/probe ready-spy
octl site-a ping >/dev/null || fail "ping while spied on"
as site-a site-a mosquitto_pub -q 1 -t cfm/v1/agent/vm1/req -m marker-2
wait_until 10 "marker-2 at the agent" seen agent marker-2
until_seen 10 spy operator site-a cfm/v1/sys/acltest/event/probe marker-3
seen agent secret && fail "the agent read what is not its own: $(cat "$TMP/agent.out")"
seen agent online && fail "the agent read site statuses"
seen spy secret-object && fail "the operator read an object"
seen spy '"ok"' && fail "the operator read another cfmctl's answer"
seen spy 'cfm/v1/site/site-a/status' || fail "the operator cannot read site statuses"
as site-a site-a mosquitto_pub -q 1 -r -t cfm/v1/sys/acltest/obj/VMClass/x -n
unwatch agent
unwatch spy

step "a real cfm-agent logs in as agent-vm1 and publishes its own status"
mkdir -p "$TMP/vm1"
"$CFM_BUILD/cfm-agent" --vm vm1 --broker "127.0.0.1:${BROKER_PORT[site-a]}" --root "$TMP/vm1" \
    --username agent-vm1 --password-file "$FED/secrets/agent-vm1.pw" >>"$TMP/agent-vm1.log" 2>&1 &
PIDS[agent-vm1]=$!
vm1_is() {
    as site-a site-a mosquitto_sub -t cfm/v1/agent/vm1/status -C 1 -W 1 2>/dev/null |
        grep -q "\"state\":\"$1\""
}
wait_until 10 "vm1's status online" vm1_is online
kill -TERM "${PIDS[agent-vm1]}" && wait "${PIDS[agent-vm1]}" 2>/dev/null
unset "PIDS[agent-vm1]"
wait_until 10 "vm1's status offline after it stopped" vm1_is offline

# --- 3. bridging ------------------------------------------------------------------------

step "a system loaded at site-a reaches site-b's manager and site-c's broker"
out=$(octl site-a system load "$CFM_SRC/examples/web3tier.json") || fail "load: $out"
assert_contains "$out" "10 created" "load at site-a"
objects_at() { octl "$1" --json objects list --system shop | grep -c '"kind":' || true; }
objects_are() { [ "$(objects_at "$1")" = "$2" ]; }
retained_objects_are() { [ "$(retained_count "$1" "$1" 'cfm/v1/sys/shop/obj/#')" = "$2" ]; }
wait_until 20 "10 objects at site-b's manager" objects_are site-b 10
wait_until 20 "10 retained objects on site-c's broker" retained_objects_are site-c 10
assert_eq 10 "$(objects_at site-a)" "objects at site-a"
assert_contains "$(octl site-b sites list)" "site-a" "site-b sees site-a"

step "a message published at site-a arrives exactly once at every broker"
for site in "${SITES[@]}"; do
    watch "once-$site" "$site" "$site" 'cfm/v1/sys/looptest/#'
    until_seen 10 "once-$site" "$site" "$site" cfm/v1/sys/looptest/event/probe "ready-$site"
done
as site-a site-a mosquitto_pub -q 1 -t cfm/v1/sys/looptest/event/ping -m only-once
as site-a site-a mosquitto_pub -q 1 -r -t cfm/v1/sys/looptest/obj/VMClass/once -m retained-once
# The window: a marker from site-a behind the messages, then, once it is at
# every broker, markers from site-b and site-c: a message still circling
# the mesh would have gone round it by then.
as site-a site-a mosquitto_pub -q 1 -t cfm/v1/sys/looptest/event/marker -m marker-a
for site in "${SITES[@]}"; do wait_until 10 "marker-a at $site" seen "once-$site" marker-a; done
as site-b site-b mosquitto_pub -q 1 -t cfm/v1/sys/looptest/event/marker -m marker-b
as site-c site-c mosquitto_pub -q 1 -t cfm/v1/sys/looptest/event/marker -m marker-c
for site in "${SITES[@]}"; do
    wait_until 10 "marker-b at $site" seen "once-$site" marker-b
    wait_until 10 "marker-c at $site" seen "once-$site" marker-c
done
for site in "${SITES[@]}"; do
    assert_eq 1 "$(count "once-$site" only-once)" "copies of the message at $site"
    assert_eq 1 "$(count "once-$site" retained-once)" "copies of the retained message at $site"
    assert_eq 1 "$(count "once-$site" marker-b)" "copies of site-b's marker at $site"
done
for site in "${SITES[@]}"; do unwatch "once-$site"; done
as site-a site-a mosquitto_pub -q 1 -r -t cfm/v1/sys/looptest/obj/VMClass/once -n

step "cfmctl reaches a manager through another site's broker"
assert_contains "$(octl site-a -b site-c ping)" "site site-a answered" "site-a through site-c"
assert_contains "$(octl site-b -b site-a objects list --system shop)" "lb-conf" "site-b through site-a"

step "site-b's broker stops: site-c sees the link down; what site-b missed arrives after"
kill -TERM "${PIDS[broker-site-b]}"
wait "${PIDS[broker-site-b]}" 2>/dev/null
unset "PIDS[broker-site-b]"
wait_until 15 "link site-a -> site-b down at site-c" link_is site-a site-b 0
sed -e 's/"count": 2/"count": 3/' "$CFM_SRC/examples/web3tier.json" >"$TMP/changed.json"
out=$(octl site-a system load "$TMP/changed.json") || fail "load while site-b is down: $out"
assert_contains "$out" "1 updated" "load while site-b is down"
fed_start_broker site-b
wait_until 30 "site-b's manager answering again" octl site-b -t 1 ping
web_count_is_3() {
    octl site-b --json objects list --system shop --kind BusinessSystemElement |
        grep -q '"count": *3'
}
wait_until 60 "link site-a -> site-b up again at site-c" link_is site-a site-b 1
wait_until 30 "the update made while site-b was down at site-b" web_count_is_3
b_online_at_a() { octl site-a sites list | grep -qE "^site-b +online"; }
wait_until 30 "site-b online again at site-a" b_online_at_a

for site in site-a site-b; do
    stop_manager "$site" || fail "manager $site exit status $? on SIGTERM"
done
pass
