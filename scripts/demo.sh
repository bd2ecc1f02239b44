#!/usr/bin/env bash
# demo.sh - the main job of `make demo`: a real Mosquitto broker and a real
# cfm-manager on loopback, the example business system loaded and listed
# through cfmctl, every step narrated. Everything it starts is stopped when
# it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${CFM_BUILD:-build}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cfm-demo.XXXXXX")
declare -a PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo; say "interrupted; stopping everything"; exit 130' INT TERM

T0=${EPOCHREALTIME/./}
say() {
    local us=$((${EPOCHREALTIME/./} - T0))
    printf '[%3d.%02ds] %s\n' $((us / 1000000)) $((us / 10000 % 100)) "$*"
}
run() { printf '         $ %s\n' "$*"; "$@" | sed 's/^/           /'; }
wait_for() { # SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { say "gave up waiting for $what"; exit 1; }
        sleep 0.05
    done
}

PORT=$("$BUILD/cfm-freeport")
cat >"$DIR/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DIR/
CONF
[ "$(id -u)" -eq 0 ] && echo "user root" >>"$DIR/mosquitto.conf"

say "starting a Mosquitto broker for site-a on 127.0.0.1:$PORT"
mosquitto -c "$DIR/mosquitto.conf" >"$DIR/broker.log" 2>&1 &
PIDS+=($!)
wait_for 10 "the broker" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT"

say "starting cfm-manager for site-a (state in $DIR/site-a)"
"$BUILD/cfm-manager" --site site-a --broker "127.0.0.1:$PORT" --state-dir "$DIR/site-a" \
    >"$DIR/site-a.log" 2>&1 &
PIDS+=($!)
CTL=("$BUILD/cfmctl" -b "127.0.0.1:$PORT" -s site-a)
wait_for 10 "the manager" "${CTL[@]}" -t 0.3 ping
say "the manager is online; cfmctl talks to it over MQTT only"
run "${CTL[@]}" sites list

say "loading the example business system (a web 3-tier shop: lb, 2 web, db)"
run "${CTL[@]}" system load examples/web3tier.json
run "${CTL[@]}" system list
run "${CTL[@]}" system show shop

say "loading the same file again is a no-op"
run "${CTL[@]}" system load examples/web3tier.json

say "every object is also on the broker, retained, for other sites to pick up:"
run mosquitto_sub -p "$PORT" -t 'cfm/v1/sys/shop/obj/VMClass/+' -C 2 -W 2

say "stopping the manager: it publishes its status as offline"
kill -TERM "${PIDS[1]}"
wait "${PIDS[1]}" || true
run mosquitto_sub -p "$PORT" -t cfm/v1/site/site-a/status -C 1 -W 2
say "done: a broker, a manager, a system loaded, listed and kept across a clean stop"
