#!/usr/bin/env bash
# One manager on one broker, the example system loaded:
#
# manager_start_ms: from fork() of cfm-manager until a subscriber sees its
#   fresh retained status "online" (median of 7 starts on the same state).
#   Baseline, in the same run: the same for a plain libmosquitto client
#   that connects and publishes one retained message (cfm-bench-raw pub).
#   Target: at most 100 ms.
# manager_idle_rss_mb: VmRSS of that manager (/proc/PID/status) once it
#   has loaded the example and been idle for a second. Target: 10 MiB.
source "$(dirname "$0")/benchlib.sh"

RUNS=7
bench_broker m
port=${BROKER_PORT[m]}

step "the example loaded once, so each timed start opens a store that holds it"
start_manager site-a m
ctl site-a system load "$CFM_SRC/examples/web3tier.json" >/dev/null || fail "loading the example"
wait_until 10 "the example acknowledged by the broker" pending_zero site-a
stop_manager site-a || fail "the manager did not stop cleanly"

startup() {  # startup TOPIC CMD...: cfm-bench-raw startup's line
    local topic=$1
    shift
    "$CFM_BUILD/cfm-bench-raw" startup --port "$port" --topic "$topic" \
        --match '"state":"online"' --runs "$RUNS" --log "$TMP/startup.log" --timeout 10 -- "$@"
}

raw=$(startup cfm/v1/site/bench-raw/status "$CFM_BUILD/cfm-bench-raw" pub --port "$port" \
    --topic cfm/v1/site/bench-raw/status --message '{"state":"online","site":"bench-raw"}') ||
    fail "timing the plain client"
step "plain client: $raw"
mgr=$(startup cfm/v1/site/site-a/status "$CFM_BUILD/cfm-manager" --site site-a \
    --broker "127.0.0.1:$port" --state-dir "$TMP/site-a") || fail "timing the manager's start"
step "manager: $mgr"
start_ms=$(field "$mgr" median_ms)
raw_ms=$(field "$raw" median_ms)

step "idle manager: the example loaded, a second without work"
start_manager site-a m
wait_until 10 "nothing left to acknowledge" pending_zero site-a
sleep 1   # "idle" means a second without work; there is no condition to poll
status=/proc/${PIDS[manager-site-a]}/status
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "$status")
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "$status")
[ -n "$rss_kb" ] || fail "no VmRSS in $status"
rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
hwm_mb=$(awk -v k="$hwm_kb" 'BEGIN { printf "%.1f", k / 1024 }')

figure manager_start_ms "$start_ms" ms "$raw_ms" value 100
figure manager_idle_rss_mb "$rss_mb" MiB - value 10
echo "summary: a manager's status was online ${start_ms} ms after fork (a plain client's" \
    "retained message: ${raw_ms} ms); idle with the example it holds ${rss_mb} MiB" \
    "resident (peak ${hwm_mb} MiB)"
