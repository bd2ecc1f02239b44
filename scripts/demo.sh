#!/usr/bin/env bash
# demo.sh - the main job of `make demo`: two cloud sites on this machine,
# each a Mosquitto broker and a cfm-manager with the local cloud driver
# (VMs are real cfm-agent processes), bridged. The example web shop is
# deployed at site-a, answers HTTP, scales out into site-b, survives the
# loss of all of site-a (manager, broker and VMs, kill -9) by recovering at
# site-b after one published event, with its data, and fails back to site-a
# once it is rebuilt. Every step is narrated;
# everything started is stopped at the end, also on Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${CFM_BUILD:-build}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cfm-demo.XXXXXX")
T0=${EPOCHREALTIME/./}

say() {
    local us=$((${EPOCHREALTIME/./} - T0))
    printf '\n[%3d.%02ds] %s\n' $((us / 1000000)) $((us / 10000 % 100)) "$*"
}
show() { printf '           %s\n' "$@"; }
fail() { say "FAILED: $*"; say "logs are in $DIR (kept)"; KEEP=1; exit 1; }
KEEP=0
source scripts/dr-lib.sh
finish() {
    dr_cleanup
    [ "$KEEP" = 1 ] || rm -rf "$DIR"
}
trap finish EXIT
trap 'say "interrupted: stopping everything"; exit 130' INT TERM

say "Two cloud sites on loopback: a broker and a cfm-manager each, bridged."
dr_broker site-a
dr_broker site-b site-a
dr_manager site-a 6
dr_manager site-b 8
show "site-a: broker 127.0.0.1:${DR_PORT[site-a]}, capacity 6 vCPU" \
     "site-b: broker 127.0.0.1:${DR_PORT[site-b]}, capacity 8 vCPU"
dr_wait 10 "both sites to see each other" bash -c \
    "$BUILD/cfmctl -b 127.0.0.1:${DR_PORT[site-b]} -s site-b sites list | grep site-a | grep -q online"
dr_ctl site-b sites list | sed 's/^/           /'

say "Loading the web shop (lb -> 2 web -> db, db replica at site-b) at site-a."
dr_ctl site-a system load examples/web3tier.json | sed 's/^/           /'

say "Publishing 'deploy': site-a starts db, web, lb; site-b starts the db replica."
result=$(dr_run site-a deploy '{}' 180)
show "$(echo "$result" | grep -o '"duration_ms": [0-9]*' | head -n 1)"
dr_ctl site-a vms list --system shop | sed 's/^/           /'
LB_A=$(dr_public site-a)
[ -n "$LB_A" ] || fail "no public address for the lb at site-a"

say "The shop answers on its public address http://$LB_A:8000/ (the lb spreads the requests):"
for _ in 1 2 3 4; do show "$(dr_http "http://$LB_A:8000/" || echo '(no answer)')"; done
say "Writing an order through the shop; the db replicates it to site-b:"
curl -sf --max-time 3 -X PUT --data "2 books, 1 lamp" "http://$LB_A:8000/kv/order-1" >/dev/null ||
    fail "writing through the shop"
show "PUT /kv/order-1 = '2 books, 1 lamp'" \
     "GET /kv/order-1 = '$(dr_http "http://$LB_A:8000/kv/order-1")'"

say "Publishing 'scale_out' (+2 web): site-a has room for one, the other goes to site-b."
result=$(dr_run site-a scale_out '{"count": 2}' 180)
show "$(echo "$result" | tr -d '\n ' | grep -o '"result":{[^}]*}')"
dr_ctl site-a vms list --system shop --site site-b | sed 's/^/           /'
for _ in 1 2 3 4 5; do show "$(dr_http "http://$LB_A:8000/" || echo '(no answer)')"; done

say "Disaster: site-a is killed (kill -9 of its manager, its broker and all its VMs)."
dr_kill_site site-a
gone() { ! curl -s --max-time 1 "http://$LB_A:8000/" >/dev/null; }
dr_wait 10 "site-a's services to die with their VMs" gone
show "http://$LB_A:8000/ no longer answers"
dr_wait 30 "site-b to see site-a offline" bash -c \
    "$BUILD/cfmctl -b 127.0.0.1:${DR_PORT[site-b]} -s site-b sites list | grep site-a | grep -q offline"
dr_ctl site-b sites list | sed 's/^/           /'

say "Triggering DR with one plain MQTT message at site-b:"
show "mosquitto_pub -q 1 -t cfm/v1/sys/shop/event/dr -m '{\"payload\":{\"target_site\":\"site-b\"}}'"
DR_T0=${EPOCHREALTIME/./}
mosquitto_sub -p "${DR_PORT[site-b]}" -t cfm/v1/sys/shop/event/dr_completed -C 1 -W 300 \
    >"$DIR/dr_completed.json" &
SUB=$!
dr_wait 10 "the subscription" bash -c "sleep 0.2; kill -0 $SUB"
mosquitto_pub -p "${DR_PORT[site-b]}" -q 1 -t cfm/v1/sys/shop/event/dr \
    -m '{"payload":{"target_site":"site-b"}}'
wait "$SUB" || fail "no dr_completed within 300 s (see $DIR/site-b.log)"
DR_MS=$(((${EPOCHREALTIME/./} - DR_T0) / 1000))
RTO=$(grep -o '"rto_ms":[0-9]*' "$DIR/dr_completed.json" | grep -o '[0-9]*$')
say "dr_completed: recovered at site-b; the procedure took ${RTO} ms, event to completion ${DR_MS} ms."
dr_ctl site-b vms list --system shop --site site-b | sed 's/^/           /'
LB_B=$(dr_public site-b)
[ -n "$LB_B" ] || fail "no public address for the lb at site-b"
say "The shop answers again, from site-b, on http://$LB_B:8000/:"
for _ in 1 2 3; do show "$(dr_http "http://$LB_B:8000/" || echo '(no answer)')"; done
ORDER=$(dr_http "http://$LB_B:8000/kv/order-1")
show "GET /kv/order-1 = '$ORDER'  (written at site-a before the disaster)"
[ "$ORDER" = "2 books, 1 lamp" ] || fail "the order was lost"

say "Writing another order at site-b while site-a is down:"
curl -sf --max-time 3 -X PUT --data "1 umbrella" "http://$LB_B:8000/kv/order-2" >/dev/null ||
    fail "writing at site-b"
show "PUT /kv/order-2 = '1 umbrella'"

say "site-a comes back (rebuilt: new broker, new manager, empty disks)."
rm -rf "$DIR/site-a"
dr_broker site-a
dr_manager site-a 6
dr_wait 30 "site-a to learn that site-b serves now" bash -c \
    "$BUILD/cfmctl -b 127.0.0.1:${DR_PORT[site-a]} -s site-a system show shop | grep -q 'primary site-b'"
dr_ctl site-a sites list | sed 's/^/           /'

say "Publishing 'failback': a short planned outage moves the shop back to site-a with its data,
           and the db replica back to site-b."
FB_T0=${EPOCHREALTIME/./}
result=$(dr_run site-a failback '{"target_site": "site-a"}' 300)
FB_MS=$(((${EPOCHREALTIME/./} - FB_T0) / 1000))
dr_ctl site-a vms list --system shop | awk 'NR == 1 || $4 == "running"' | sed 's/^/           /'
LB_A=$(dr_public site-a)
[ -n "$LB_A" ] || fail "no public address for the lb at site-a after failback"
say "The shop answers from site-a again, on http://$LB_A:8000/:"
for _ in 1 2; do show "$(dr_http "http://$LB_A:8000/" || echo '(no answer)')"; done
O1=$(dr_http "http://$LB_A:8000/kv/order-1")
O2=$(dr_http "http://$LB_A:8000/kv/order-2")
show "GET /kv/order-1 = '$O1'  (written at site-a before the disaster)" \
     "GET /kv/order-2 = '$O2'  (written at site-b during the outage)"
[ "$O1" = "2 books, 1 lamp" ] && [ "$O2" = "1 umbrella" ] || fail "an order was lost in failback"

say "Summary: deployed at site-a, scaled out into site-b, lost site-a entirely, recovered at
           site-b from one published event in ${DR_MS} ms with the data written before the
           disaster, and failed back to the rebuilt site-a in ${FB_MS} ms with every write."
