#!/usr/bin/env bash
# waiting_runs_10k_rss_mb and resume_latency_10k_ratio: a manager with
# 10,000 procedure runs blocked in wait_cloud_event (as test_runs_10k.sh
# starts them: one `mosquitto_pub -l` of 10,000 events). Each run of
# bench/procedures/wait_release.lua waits for release {n = N} and then
# publishes resumed {n = N}.
#
# waiting_runs_10k_rss_mb: the manager's VmRSS once all 10,000 wait and its
# outbox is empty. Baseline: the same manager idle, the system loaded.
# Target: at most 64 MiB.
#
# resume_latency_10k_ratio: from publishing release {n = k} until resumed
# {n = k} arrives at a subscriber on the same broker (cfm-bench-raw ask,
# microseconds), the median of SAMPLES releases, with 10,000 runs waiting
# (value) over the same with only the released run waiting (baseline; each
# sample starts its run first and waits for its retained record to say
# "waiting"). Both in ms on the figure line; the ratio is the figure.
# Target: at most 1.5. See docs/performance.md.
source "$(dirname "$0")/benchlib.sh"

N=${BENCH_WAITING_N:-10000}
SAMPLES=${BENCH_WAITING_SAMPLES:-21}
GAP_MS=100                 # quiet time before each release
PROCS=$CFM_SRC/bench/procedures
SYS=cfm/v1/sys/hold

cat >"$TMP/hold.json" <<'EOF'
{
  "id": "hold",
  "sites": ["site-a"],
  "primary": "site-a",
  "procedures": {"hold": {"script": "wait_release.lua", "run_at": "site-a", "timeout_s": 900}},
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
EOF

rss_mib() {  # the manager's VmRSS in MiB
    awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/${PIDS[manager-site-a]}/status"
}
hwm_mib() {
    awk '/^VmHWM:/ { printf "%.1f\n", $2 / 1024 }' "/proc/${PIDS[manager-site-a]}/status"
}

# store QUERY: a read-only query of the manager's store (WAL: never blocks it).
store() {
    sqlite3 "file:$TMP/site-a/cfm.db?mode=ro" ".timeout 2000" "$1"
}
waiting_runs() {
    store "SELECT count(*) FROM objects WHERE system = 'hold' AND kind = 'ProcedureRun'
           AND body LIKE '%\"state\":\"waiting\"%'"
}
outbox_empty() {
    [ "$(store 'SELECT count(*) FROM outbox')" = 0 ]
}
all_waiting() {
    local n
    n=$(waiting_runs)
    [ "$n" != "$last_waiting" ] && echo "  $(date +%T) waiting: $n" >&3
    last_waiting=$n
    [ "$n" = "$1" ]
}
exec 3>&1

# latency KEYS [PREPARE]: cfm-bench-raw ask over KEYS (comma-separated n);
# with PREPARE, each sample first starts its own run and waits for it.
latency() {
    local prep=()
    if [ -n "${2:-}" ]; then
        prep=(--prepare-topic "$SYS/event/hold" --prepare '{"id": "one-{k}", "payload": {"n": {k}}}'
              --ready-topic "$SYS/run/+" --ready '"state":"waiting"' --ready '"payload":{"n":{k}}')
    fi
    "$CFM_BUILD/cfm-bench-raw" ask --port "${BROKER_PORT[a]}" --keys "$1" "${prep[@]}" \
        --send-topic "$SYS/event/release" --send '{"id": "release-{k}", "payload": {"n": {k}}}' \
        --expect-topic "$SYS/event/resumed" --expect '"payload":{"n":{k}}' \
        --gap-ms "$GAP_MS" --timeout 30
}

bench_broker a
start_manager site-a a --procedures "$PROCS"
out=$(ctl site-a system load "$TMP/hold.json") || fail "load: $out"
wait_until 10 "the manager's outbox empty" outbox_empty
sleep 1   # idle, as manager_idle_rss_mb measures it
idle=$(rss_mib)
step "manager idle, system loaded: VmRSS ${idle} MiB"

step "$SAMPLES releases with one run waiting (each its own run, started first)"
keys=$(seq -s, 100001 $((100000 + SAMPLES)))
one=$(latency "$keys" prepare) || fail "latency with one run waiting"
step "one waiting: $one"

step "$N runs waiting: $N hold events with one mosquitto_pub -l"
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++)
    printf "{\"id\": \"hold-%05d\", \"payload\": {\"n\": %d}}\n", i, i }' >"$TMP/events"
t0=$EPOCHREALTIME
mosquitto_pub -p "${BROKER_PORT[a]}" -q 1 -t "$SYS/event/hold" -l <"$TMP/events" ||
    fail "mosquitto_pub -l"
last_waiting=
CFM_POLL=0.5 wait_until 150 "$N runs waiting" all_waiting "$N"
t_wait=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
wait_until 60 "the manager's outbox empty" outbox_empty
t_quiet=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
sleep 1
rss=$(rss_mib)
hwm=$(hwm_mib)
ctl site-a -t 30 ping >/dev/null || fail "no ping answer with $N runs waiting"
step "all $N waiting after ${t_wait}s, outbox empty after ${t_quiet}s: VmRSS ${rss} MiB (peak ${hwm} MiB)"

step "$SAMPLES releases with $N runs waiting"
keys=$(awk -v n="$N" -v s="$SAMPLES" 'BEGIN { for (i = 1; i <= s; i++)
    printf "%s%d", (i > 1 ? "," : ""), int(i * n / s) }')
many=$(latency "$keys") || fail "latency with $N runs waiting"
step "$N waiting: $many"

one_ms=$(awk -v us="$(field "$one" median_us)" 'BEGIN { printf "%.3f", us / 1000 }')
many_ms=$(awk -v us="$(field "$many" median_us)" 'BEGIN { printf "%.3f", us / 1000 }')
figure waiting_runs_10k_rss_mb "$rss" MiB "$idle" value 64
figure resume_latency_10k_ratio "$many_ms" ms "$one_ms" ratio 1.5
echo "summary: with $N runs blocked in wait_cloud_event the manager held ${rss} MiB" \
    "resident (peak ${hwm} MiB; idle ${idle} MiB: $(awk -v r="$rss" -v i="$idle" -v n="$N" \
    'BEGIN { printf "%.1f", (r - i) * 1024 / n }') KiB per waiting run); the $N runs were" \
    "all waiting ${t_wait}s after the burst of events began. One release resumed its run" \
    "and its answer arrived in ${many_ms} ms (median of $SAMPLES) with $N waiting, against" \
    "${one_ms} ms with one run waiting"
