#!/usr/bin/env bash
# 10,000 runs waiting at once, then released by one event: one
# `mosquitto_pub -l` publishes 10,000 "hold" events (one a line), each
# starting hold.lua, which waits for a "release" event of its system. Once
# the manager reports all 10,000 waiting, it must still answer and its RSS
# is printed; one "release" event then lets all 10,000 succeed. Timings of
# each phase are printed; the whole test is bounded (RUNS_10K_LIMIT s).
source "$(dirname "$0")/lib.sh"
exec 3>&2   # progress lines, past wait_until's redirections

PROCS=$CFM_SRC/tests/integration/procedures
N=${RUNS_10K_N:-10000}
LIMIT=${RUNS_10K_LIMIT:-170}   # ctest kills integration tests after 180 s
T0=$SECONDS

left() {  # left: seconds of the test's budget still left (at least 1)
    local l=$((LIMIT - (SECONDS - T0)))
    echo $((l > 0 ? l : 1))
}

# count_runs STATE: runs of shop in STATE, as `runs list` reports them.
count_runs() {
    ctl site-a -t 60 runs list --system shop | awk -v s="$1" 'NR > 1 && $5 == s' | wc -l
}

runs_are() {  # runs_are STATE N: exactly N runs of shop are in STATE
    local n
    n=$(count_runs "$1")
    echo "  $(date +%T) $1: $n" >&3
    [ "$n" = "$2" ]
}

no_sanitizer_reports() {
    ! grep -l -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$TMP"/*.log
}

# span PATTERN: "N lines in S s" between the first and the last line of the
# manager's log matching PATTERN (its timestamps are ms-precise).
span() {
    awk -v pat="$1" '$0 ~ pat {
        split(substr($1, 12, 12), t, ":"); ms = (t[1] * 3600 + t[2] * 60 + t[3]) * 1000
        if (!n++) first = ms; last = ms
    } END { printf "%d lines in %.1f s", n, (last - first) / 1000 }' "$TMP/site-a.log"
}

rss() {  # rss: the manager's resident set (current and peak), from /proc
    awk '/^VmRSS|^VmHWM/ { printf "%s %s %s  ", $1, $2, $3 }' "/proc/${PIDS[manager-site-a]}/status"
}

cat >"$TMP/shop.json" <<'EOF'
{
  "id": "shop",
  "sites": ["site-a"],
  "primary": "site-a",
  "procedures": {"hold": {"script": "hold.lua", "run_at": "site-a", "timeout_s": 900}},
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
EOF

# A burst of 10,000 QoS 1 messages to one subscriber overflows mosquitto's
# default queue of 1000 per client (the rest would be dropped); the
# deployed configuration (broker-config/mosquitto.conf) raises it.
start_broker a "max_queued_messages 100000" "max_inflight_messages 100"
start_manager site-a a --procedures "$PROCS"
out=$(ctl site-a system load "$TMP/shop.json") || fail "load: $out"
echo "manager idle: $(rss)"

step "publish $N hold events with one mosquitto_pub"
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"id\": \"hold-%05d\", \"payload\": {\"n\": %d}}\n", i, i }' \
    >"$TMP/events"
assert_eq "$N" "$(wc -l <"$TMP/events")" "events generated"
t=$SECONDS
mosquitto_pub -p "${BROKER_PORT[a]}" -q 1 -t cfm/v1/sys/shop/event/hold -l <"$TMP/events" ||
    fail "mosquitto_pub -l"
echo "published $N events in $((SECONDS - t)) s"

step "wait until $N runs wait"
t=$SECONDS
CFM_POLL=2 wait_until "$(left)" "$N runs waiting" runs_are waiting "$N"
echo "all $N runs waiting after $((SECONDS - t)) s (test time $((SECONDS - T0)) s)"
manager_alive site-a || fail "the manager died"
ctl site-a -t 30 ping >/dev/null || fail "no ping answer with $N runs waiting"
echo "manager with $N waiting runs: $(rss)"
assert_eq 0 "$(count_runs failed)" "failed runs before the release"

step "one release event lets every run succeed"
t=$SECONDS
pub a cfm/v1/sys/shop/event/release '{"id": "release-1", "payload": {}}'
CFM_POLL=2 wait_until "$(left)" "$N runs succeeded" runs_are succeeded "$N"
echo "all $N runs succeeded $((SECONDS - t)) s after the release (test time $((SECONDS - T0)) s)"
assert_eq 0 "$(count_runs waiting)" "runs still waiting"
echo "manager after the release: $(rss)"
echo "manager log: events handled: $(span 'event: event hold on'); runs started: $(span 'engine: run .* started');" \
    "runs succeeded: $(span 'engine: run .* succeeded')"
out=$(ctl site-a --json runs show "run-$(printf 'hold-%05d/site-a/hold' "$N" | sha256sum | cut -c1-24)")
assert_contains "$out" "\"n\": $N" "result of the last run"

stop_manager site-a || fail "manager exit status $? on SIGTERM"
no_sanitizer_reports || fail "sanitizer reports in the logs"
pass "$N runs in $((SECONDS - T0)) s"
