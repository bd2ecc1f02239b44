# lib.sh - shared helpers for cfm's integration tests (sourced by each
# tests/integration/test_*.sh). Real processes only: mosquitto brokers on
# free loopback ports, cfm-manager processes in a temporary directory,
# cfmctl and mosquitto_pub/sub as clients. Every wait is a bounded poll on a
# condition; every process started here is killed on exit, pass or fail.
#
# Environment (set by ctest): CFM_BUILD (the build dir), CFM_SRC (the tree).

set -u
CFM_SRC=${CFM_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CFM_BUILD=${CFM_BUILD:-$CFM_SRC/build}
CFM_POLL=${CFM_POLL:-0.05}        # seconds between two looks at a condition
TEST_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cfm-$TEST_NAME.XXXXXX")
declare -A PIDS=()                # name -> pid of every process we started
declare -A BROKER_PORT=()         # broker name -> port
declare -A MANAGER_BROKER=()      # site -> broker name
declare -A MANAGER_ARGS=()        # site -> extra manager flags

cleanup() {
    local status=$?
    for name in "${!PIDS[@]}"; do
        kill -KILL "${PIDS[$name]}" 2>/dev/null
    done
    # Local-driver VMs run in their own process groups and outlive their
    # manager by design: stop every one a manager of this test started.
    for vmjson in "$TMP"/*/vms/*/vm.json; do
        [ -f "$vmjson" ] || continue
        local vmpid
        vmpid=$(grep -o '"pid": *[0-9]*' "$vmjson" | grep -o '[0-9]*$')
        [ "${vmpid:-0}" -gt 0 ] && kill -KILL -- "-$vmpid" 2>/dev/null  # 0: terminated (and "-0" is our own group)
    done
    # An agent whose manager was killed between its spawn and its record:
    # found by its disk, which lies under this test's directory.
    pkill -KILL -f -- "cfm-agent .*--root $TMP/" 2>/dev/null
    wait 2>/dev/null
    if [ "$status" -ne 0 ]; then
        echo "--- $TEST_NAME failed; logs from $TMP:" >&2
        for log in "$TMP"/*.log; do
            [ -f "$log" ] || continue
            echo "--- $(basename "$log") (last 40 lines)" >&2
            tail -n 40 "$log" >&2
        done
        for log in "$TMP"/*/vms/*/disk/*.log; do # the services on the VMs
            [ -f "$log" ] || continue
            echo "--- ${log#"$TMP"/} (last 10 lines)" >&2
            tail -n 10 "$log" >&2
        done
        if [ -n "${CFM_TEST_KEEP:-}" ]; then
            echo "--- kept in $TMP (CFM_TEST_KEEP is set)" >&2
            exit "$status"
        fi
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL $TEST_NAME: $*" >&2
    exit 1
}

pass() {
    echo "PASS $TEST_NAME${1:+: $1}"
}

step() {
    echo "--- $*"
}

free_port() {
    "$CFM_BUILD/cfm-freeport"
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds,
# failing the test with DESCRIPTION when SECONDS pass first.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for: $what"
        sleep "$CFM_POLL"
    done
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_broker NAME [EXTRA-CONFIG-LINE...]: a mosquitto with persistence in
# $TMP/NAME on a free port (kept across restarts of the same NAME).
start_broker() {
    local name=$1
    shift
    local dir=$TMP/broker-$name port
    port=${BROKER_PORT[$name]:-$(free_port)}
    mkdir -p "$dir"
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence true"
        echo "persistence_location $dir/"
        echo "autosave_interval 1"
        # mosquitto's default (1000) silently drops bursts of events for a
        # busy client; broker-config/mosquitto.conf sets the same.
        echo "max_queued_messages 100000"
        echo "user root"
        for line in "$@"; do echo "$line"; done
    } >"$dir/mosquitto.conf"
    mosquitto -c "$dir/mosquitto.conf" >>"$TMP/broker-$name.log" 2>&1 &
    PIDS[broker-$name]=$!
    BROKER_PORT[$name]=$port
    wait_until 10 "broker $name listening on $port" port_open "$port"
}

stop_broker() {   # graceful (SIGTERM): the broker saves its state
    local pid=${PIDS[broker-$1]}
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "PIDS[broker-$1]"
}

kill_broker() {   # SIGKILL
    local pid=${PIDS[broker-$1]}
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "PIDS[broker-$1]"
}

# start_manager SITE BROKER [FLAG...]: a cfm-manager for SITE on broker
# BROKER with its state in $TMP/SITE; waits until it answers ping.
start_manager() {
    local site=$1 broker=$2
    shift 2
    MANAGER_BROKER[$site]=$broker
    MANAGER_ARGS[$site]="$*"
    "$CFM_BUILD/cfm-manager" --site "$site" --broker "127.0.0.1:${BROKER_PORT[$broker]}" \
        --state-dir "$TMP/$site" "$@" >>"$TMP/$site.log" 2>&1 &
    PIDS[manager-$site]=$!
    wait_until 15 "manager $site answering" ctl "$site" -t 0.3 ping
}

# one_site_shop PROCEDURES [FLAG...]: broker a and manager site-a (with the
# procedures of tests/integration/procedures and FLAGs), and loaded there a
# system "shop" of site-a alone with PROCEDURES (its "procedures" object,
# JSON) and one VM class.
one_site_shop() {
    local procs=$1 out
    shift
    cat >"$TMP/shop.json" <<JSON
{
  "id": "shop",
  "sites": ["site-a"],
  "primary": "site-a",
  "procedures": $procs,
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
JSON
    start_broker a
    start_manager site-a a --procedures "$CFM_SRC/tests/integration/procedures" "$@"
    out=$(ctl site-a system load "$TMP/shop.json") || fail "load: $out"
}

stop_manager() {  # SIGTERM: returns the exit status of the manager
    local pid=${PIDS[manager-$1]} status=0
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || status=$?
    unset "PIDS[manager-$1]"
    return "$status"
}

kill_manager() {  # SIGKILL
    local pid=${PIDS[manager-$1]}
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "PIDS[manager-$1]"
}

# died_of_failpoint SITE FAILPOINT: SITE's manager, started with
# CFM_FAILPOINT=FAILPOINT, killed itself there (SIGKILL: exit status 137).
died_of_failpoint() {
    local site=$1 fp=$2 pid=${PIDS[manager-$1]} status=0
    gone() { local s; s=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }
    wait_until 90 "$fp: the failpoint to kill the manager of $site (is it reached?)" gone
    wait "$pid" 2>/dev/null || status=$?
    unset "PIDS[manager-$site]"
    [ "$status" = 137 ] || fail "$fp: the manager of $site exited with $status, not by its failpoint"
    grep -q "CFM_FAILPOINT $fp reached" "$TMP/$site.log" || fail "$fp: no failpoint line in the log"
}

manager_alive() {
    kill -0 "${PIDS[manager-$1]}" 2>/dev/null
}

# ctl SITE ARGS...: cfmctl against SITE's manager through its broker.
ctl() {
    local site=$1
    shift
    "$CFM_BUILD/cfmctl" -b "127.0.0.1:${BROKER_PORT[${MANAGER_BROKER[$site]}]}" -s "$site" "$@"
}

# pub BROKER TOPIC PAYLOAD: a plain QoS 1 publish with mosquitto_pub.
pub() {
    mosquitto_pub -p "${BROKER_PORT[$1]}" -q 1 -t "$2" -m "$3"
}

# retained BROKER TOPIC: prints the retained message on TOPIC (or nothing).
retained() {
    mosquitto_sub -p "${BROKER_PORT[$1]}" -t "$2" -C 1 -W 1 2>/dev/null
}

assert_eq() {     # assert_eq EXPECTED ACTUAL WHAT
    [ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
}

assert_contains() {  # assert_contains HAYSTACK NEEDLE WHAT
    case "$1" in
    *"$2"*) ;;
    *) fail "$3: '$2' not found in: $1" ;;
    esac
}

# count_objects SITE [ARGS...]: the number of objects `objects list` prints.
count_objects() {
    local site=$1
    shift
    ctl "$site" --json objects list "$@" | grep -c '"kind":' || true
}

# --- procedure runs ------------------------------------------------------

# run_id EVENT-ID SITE TYPE: the run id the manager derives (rules.c).
run_id() {
    printf 'run-%s' "$(printf '%s/%s/%s' "$1" "$2" "$3" | sha256sum | cut -c1-24)"
}

# run_field SITE RUN KEY: the JSON text of a top-level field of the run's
# record (`runs show --json`), nested values joined on one line.
run_field() {
    ctl "$1" --json runs show "$2" 2>/dev/null | awk -v key="$3" '
        index($0, "  \"" key "\": ") == 1 {
            v = substr($0, length(key) + 7)
            if (v ~ /[{[]$/) { on = 1; next }
            sub(/,$/, "", v); print v; exit
        }
        on { line = $0; sub(/^ +/, "", line); v = v " " line }
        on && /^  [}\]]/ { sub(/,$/, "", v); print v; exit }'
}

run_is() {  # run_is SITE RUN STATE
    [ "$(run_field "$1" "$2" state)" = "\"$3\"" ]
}

run_ended() {  # run_ended SITE RUN: succeeded, failed or cancelled
    case "$(run_field "$1" "$2" state)" in
    '"succeeded"' | '"failed"' | '"cancelled"') return 0 ;;
    *) return 1 ;;
    esac
}
