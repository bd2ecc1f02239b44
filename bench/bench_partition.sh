#!/usr/bin/env bash
# converge_after_partition_10k_s: the federation of bench_replicate.sh holds
# 10,000 objects; A's broker is restarted without its bridge (A is cut off
# from B and C, as in test_federation.sh), all 10,000 objects change at A,
# then A's broker is restarted with its bridge. Timed from that restart
# (the heal) until B and C hold exactly A's objects; three partitions in a
# row, the figure is the median. No baseline: nothing but cfm's
# anti-entropy repairs a partition. Target: 5 s.
source "$(dirname "$0")/benchlib.sh"

ROUNDS=3

federation
step "setup: $BENCH_OBJECTS objects at A, B and C"
bench_system "$TMP/shop-v0.json" "$BENCH_OBJECTS" v0
out=$(ctl site-a -t 100 system load "$TMP/shop-v0.json") || fail "setup load at A: $out"
agree_with_a 100 >/dev/null || fail "B and C did not receive the setup load"

runs=()
partition() {
    local out t0 t_broker agreed c0
    stop_broker a
    bench_broker a   # the same broker, persistent state, no bridge
    wait_until 20 "A back on its broker" ctl site-a -t 0.5 ping
    bench_system "$TMP/shop-v$1.json" "$BENCH_OBJECTS" "v$1"
    out=$(ctl site-a -t 100 system load "$TMP/shop-v$1.json") || fail "load v$1 at A: $out"
    assert_contains "$out" "0 created, $BENCH_OBJECTS updated" "$BENCH_OBJECTS writes at A"
    wait_until 60 "A's broker acknowledged every write" pending_zero site-a
    agree_with_a 0.5 >/dev/null 2>&1 && fail "B and C agree with A during partition $1"

    stop_broker a
    c0=$(cpu_snapshot)
    t0=$EPOCHREALTIME
    bench_broker a "$(bridge_to a b)"   # heal
    t_broker=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    agreed=$(agree_with_a 100 "$t0") || fail "B and C did not converge after heal $1"
    step "partition $1 healed: broker a listening after ${t_broker}s; $agreed;" \
        "$(cpu_used "$c0" "$(cpu_snapshot)")"
    runs+=("$(field "$agreed" seconds)")
}

for round in $(seq 1 "$ROUNDS"); do
    partition "$round"
done
value=$(median "${runs[@]}")

figure converge_after_partition_10k_s "$value" s - value 5
echo "summary: after a partition during which all $BENCH_OBJECTS objects changed at A," \
    "B and C held A's objects ${value}s after A's broker came back with its bridge" \
    "(median of ${runs[*]})"
