#!/usr/bin/env bash
# replicate_10k_s: 10,000 object updates at site A (one `cfmctl system load`
# changing every object of a 10,000-object system) until sites B and C hold
# all of them, on three brokers bridged a-b-c as in test_federation.sh.
# Baseline, in the same run on the same brokers: the raw broker carrying
# 10,000 QoS 1 retained messages of the same size from a publisher at A to
# subscribers at B and C (cfm-bench-raw relay). Three timed loads and four
# raw runs, interleaved; the figure is the median of each.
# Target: at most 3 times the raw time. See docs/performance.md.
source "$(dirname "$0")/benchlib.sh"

ROUNDS=3

federation
step "setup: $BENCH_OBJECTS objects at A, B and C"
bench_system "$TMP/shop-v0.json" "$BENCH_OBJECTS" v0
out=$(ctl site-a -t 100 system load "$TMP/shop-v0.json") || fail "setup load at A: $out"
agree_with_a 100 >/dev/null || fail "B and C did not receive the setup load"

# The size of one object message as the managers publish it.
msg=$(retained b cfm/v1/sys/shop/obj/Address/addr-05000)
[ -n "$msg" ] || fail "no retained addr-05000 at B"
size=${#msg}

raw_runs=()
raw_cpu=()
raw() {
    local out c0 used
    c0=$(cpu_snapshot)
    out=$("$CFM_BUILD/cfm-bench-raw" relay --pub "${BROKER_PORT[a]}" --sub "${BROKER_PORT[b]}" \
        --sub "${BROKER_PORT[c]}" --count "$BENCH_OBJECTS" --size "$size" \
        --prefix "cfm/v1/sys/rawbench/obj/Address/run$1" --timeout 60) || fail "raw relay run $1"
    used=$(cpu_used "$c0" "$(cpu_snapshot)")
    step "raw broker run $1: $out; $used"
    raw_runs+=("$(field "$out" seconds)")
    raw_cpu+=("$(awk -v b="$(field "$used" brokers)" -v c="$(field "$out" clients_cpu)" \
        'BEGIN { printf "%.2f", b + c }')")
}

cfm_runs=()
cfm_cpu=()
load_runs=()
timed_load() {
    local out t0 t_load agreed c0 used
    bench_system "$TMP/shop-v$1.json" "$BENCH_OBJECTS" "v$1"
    c0=$(cpu_snapshot)
    t0=$EPOCHREALTIME
    out=$(ctl site-a -t 100 system load "$TMP/shop-v$1.json") || fail "load v$1 at A: $out"
    t_load=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    assert_contains "$out" "0 created, $BENCH_OBJECTS updated" "$BENCH_OBJECTS updates at A"
    agreed=$(agree_with_a 100 "$t0") || fail "B and C did not agree with A after load v$1"
    used=$(cpu_used "$c0" "$(cpu_snapshot)")
    step "cfm load $1: answered by A after ${t_load}s; $agreed; $used"
    cfm_cpu+=("$(field "$used" total)")
    cfm_runs+=("$(field "$agreed" seconds)")
    load_runs+=("$t_load")
}

raw 1
for round in $(seq 1 "$ROUNDS"); do
    timed_load "$round"
    raw $((round + 1))
done
value=$(median "${cfm_runs[@]}")
baseline=$(median "${raw_runs[@]}")

figure replicate_10k_s "$value" s "$baseline" ratio 3
echo "summary: $BENCH_OBJECTS object updates at A were applied at B and C in ${value}s" \
    "(median of ${cfm_runs[*]}; A answered the load after ${load_runs[*]}); the raw broker" \
    "carried $BENCH_OBJECTS messages of $size bytes from A to B and C in ${baseline}s" \
    "(median of ${raw_runs[*]}). CPU seconds, a steadier measure on a shared machine:" \
    "cfm $(median "${cfm_cpu[@]}") (managers and brokers), raw $(median "${raw_cpu[@]}")" \
    "(brokers and clients)"
