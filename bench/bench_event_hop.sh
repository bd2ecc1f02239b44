#!/usr/bin/env bash
# event_hop_p50_us, event_hop_p99_us, event_hop_bridged_p50_us and
# event_hop_bridged_nodelay_p50_us: one event hop between procedure runs
# at two sites. A run of hop_a.lua at site A and a run of hop_b.lua at
# site B play COUNT rounds of ping-pong (bench/procedures/): A publishes
# ping {n = i} and waits for pong {n = i}; B waits for ping {n = i} and
# publishes pong {n = i}. A hop is one publish until the other side's
# wait_cloud_event has resumed and that side has published its answer;
# it is measured as half a round trip, from the arrival times of ping i
# and ping i+1 at a watcher on A's broker (cfm-bench-raw hops:
# microseconds; cfm.now_ms() inside the runs has only millisecond
# resolution and gives the aggregate as a check).
# Baseline, in the same run on the same brokers: two plain libmosquitto
# clients bouncing a QoS 1 message of the same size (cfm-bench-raw
# pingpong), half its round trip, measured by the same watcher on the
# same broker (its messages are shaped as the runs' pings): the watcher
# costs the broker two more deliveries a round trip, and a baseline
# measured without it ran ~20 us a hop faster than the same clients
# watched (docs/performance.md, "Session 8"); the clients' own clock is
# printed beside it as a check. First both managers on one broker
# (targets: p50 <= 3x raw, p99 <= 5x raw), then on two bridged brokers
# (target: p50 <= 2x the raw round trip across the same bridge): once as
# deployed (event_hop_bridged_p50_us), where the bridge's own socket runs
# Nagle's algorithm and both cfm and raw wait ~40 ms in one direction, and
# once with TCP_NODELAY forced on that socket too
# (event_hop_bridged_nodelay_p50_us), which shows what cfm adds. Rounds of
# cfm and raw interleave; each figure is the median over the rounds.
# BENCH_HOP_COUNT, BENCH_HOP_ROUNDS, BENCH_HOP_BRIDGED_COUNT and
# BENCH_HOP_BRIDGED_ROUNDS change the sizes. See docs/performance.md.
source "$(dirname "$0")/benchlib.sh"

COUNT=${BENCH_HOP_COUNT:-500}       # round trips per round
ROUNDS=${BENCH_HOP_ROUNDS:-3}       # rounds on one broker
BRIDGED_ROUNDS=${BENCH_HOP_BRIDGED_ROUNDS:-2}
SKIP=20                             # round trips not counted (warm-up)
PROCS=$CFM_SRC/bench/procedures
EVENTS=cfm/v1/sys/hop/event

cat >"$TMP/hop.json" <<'EOF'
{
  "id": "hop",
  "sites": ["site-a", "site-b"],
  "primary": "site-a",
  "standby": "site-b",
  "procedures": {
    "hop_a": {"script": "hop_a.lua", "run_at": "site-a", "timeout_s": 600},
    "hop_b": {"script": "hop_b.lua", "run_at": "site-b", "timeout_s": 600}
  },
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
EOF

# The bridge of the two-broker case: MQTT 5, cfm/v1/# both ways, QoS 1,
# as broker-config/ and scripts/dr-lib.sh bridge sites.
hop_bridge() {
    echo "connection $1-to-$2"
    echo "address 127.0.0.1:${BROKER_PORT[$2]}"
    echo "bridge_protocol_version mqttv50"
    echo "topic cfm/v1/# both 1"
    echo "cleansession false"
    echo "try_private true"
    echo "restart_timeout 1 2"
}

run_id() {  # run_id EVENT-ID SITE TYPE: the run id the manager derives (rules.c)
    printf 'run-%s' "$(printf '%s/%s/%s' "$1" "$2" "$3" | sha256sum | cut -c1-24)"
}

run_state_is() {  # run_state_is SITE RUN STATE
    ctl "$1" --json runs show "$2" 2>/dev/null | grep -q "\"state\": \"$3\""
}

# start_b TAG: publishes hop_b's start event at B's broker until B's run is
# waiting (an event published again with the same id never starts a second
# run; the first may go out before B has subscribed to the new system).
b_waiting() {
    pub "${MANAGER_BROKER[site-b]}" "$EVENTS/hop_b" "{\"id\": \"hop-b-$1\", \"payload\": {\"count\": $COUNT}}"
    run_state_is site-b "$(run_id "hop-b-$1" site-b hop_b)" waiting
}

# pair BROKER-A BROKER-B: fresh managers for site-a and site-b on those
# brokers, hop loaded at A and held by B.
pair() {
    local site
    for site in site-a site-b; do
        [ -n "${PIDS[manager-$site]:-}" ] && kill_manager "$site"
        rm -rf "${TMP:?}/$site"
    done
    start_manager site-a "$1" --procedures "$PROCS"
    start_manager site-b "$2" --procedures "$PROCS"
    out=$(ctl site-a system load "$TMP/hop.json") || fail "load hop at A: $out"
    wait_until 20 "site-b to hold system hop" ctl site-b system show hop
}

# watch PREFIX TAG: starts the watcher of COUNT round trips under PREFIX
# on A's broker (output in $TMP/hops-TAG) and waits until it subscribed.
watch() {
    local ready=$TMP/ready-$2
    "$CFM_BUILD/cfm-bench-raw" hops --port "${BROKER_PORT[${MANAGER_BROKER[site-a]}]}" \
        --prefix "$1" --count "$COUNT" --skip "$SKIP" --ready "$ready" --timeout 150 \
        --samples "$TMP/samples-$2" \
        >"$TMP/hops-$2" 2>>"$TMP/hops.log" &
    PIDS["hops"]=$!
    wait_until 10 "the watcher subscribed" test -f "$ready"
}

# watched TAG: waits for the watcher's end; its line in $seen.
watched() {
    wait "${PIDS["hops"]}" || fail "round $1: the watcher failed: $(tail -n 3 "$TMP/hops.log")"
    unset 'PIDS[hops]'
    seen=$(cat "$TMP/hops-$1")
}

# cfm_round TAG: one pair of runs of COUNT round trips, watched on A's
# broker.
cfm_round() {
    local tag=$1 run_a out c0 used ms seen
    watch "$EVENTS" "$tag"
    CFM_POLL=0.2 wait_until 20 "hop_b's run waiting at B" b_waiting "$tag"
    c0=$(cpu_snapshot)
    pub "${MANAGER_BROKER[site-a]}" "$EVENTS/hop_a" "{\"id\": \"hop-a-$tag\", \"payload\": {\"count\": $COUNT}}"
    watched "$tag"
    used=$(cpu_used "$c0" "$(cpu_snapshot)")
    run_a=$(run_id "hop-a-$tag" site-a hop_a)
    out=$(ctl site-a runs wait "$run_a" --timeout 60 2>&1) || fail "round $tag: run at A: $out"
    out=$seen
    ms=$(ctl site-a --json runs show "$run_a" | tr -d ' ,' | awk -F: '$1 == "\"ms\"" { print $2; exit }')
    step "cfm round $tag: $out; A's run: $COUNT round trips in ${ms} ms; $used"
    cfm_hop50+=("$(field "$out" hop_p50_us)")
    cfm_hop99+=("$(field "$out" hop_p99_us)")
    cfm_ab+=("$(field "$out" ab_p50_us)")
    cfm_ba+=("$(field "$out" ba_p50_us)")
    cfm_lua+=("$(awk -v ms="$ms" -v n="$COUNT" 'BEGIN { printf "%.0f", ms * 1000 / (2 * n) }')")
    cfm_cpu+=("$(awk -v c="$(field "$used" managers)" -v n="$COUNT" 'BEGIN { printf "%.0f", c * 1e6 / n }')")
    size=$(field "$out" size)
}

# raw_round TAG [PORT2]: the raw ping-pong on A's broker (pong on PORT2),
# COUNT round trips with the first SKIP not counted, as cfm's, watched as
# cfm's are.
raw_round() {
    local tag=raw-$1 prefix=cfm/v1/sys/rawbench/event/$1 own out seen
    watch "$prefix" "$tag"
    own=$("$CFM_BUILD/cfm-bench-raw" pingpong --port "${BROKER_PORT[${MANAGER_BROKER[site-a]}]}" \
        ${2:+--port2 "$2"} --count "$((COUNT - SKIP))" --warmup "$SKIP" --size "$size" \
        --prefix "$prefix" --timeout 60) || fail "raw ping-pong $1"
    watched "$tag"
    out=$seen
    step "raw round $1: $out; the clients' own clock: $own"
    raw_hop50+=("$(field "$out" hop_p50_us)")
    raw_hop99+=("$(field "$out" hop_p99_us)")
    own_hop50+=("$(field "$own" hop_p50_us)")
}

imedian() {  # imedian N...: the median, rounded to an integer
    printf '%.0f\n' "$(median "$@")"
}

reset_samples() {
    cfm_hop50=() cfm_hop99=() cfm_ab=() cfm_ba=() cfm_lua=() cfm_cpu=() raw_hop50=() raw_hop99=()
    own_hop50=()
}

# --- both managers on one broker ---------------------------------------------
step "one broker: site-a and site-b on broker s, $ROUNDS rounds of $COUNT round trips"
bench_broker s
pair s s
reset_samples
for r in $(seq 1 "$ROUNDS"); do
    cfm_round "s$r"
    raw_round "s$r"
done
p50=$(imedian "${cfm_hop50[@]}")
p99=$(imedian "${cfm_hop99[@]}")
raw50=$(imedian "${raw_hop50[@]}")
raw99=$(imedian "${raw_hop99[@]}")
own50=$(imedian "${own_hop50[@]}")
one_broker="A to B $(imedian "${cfm_ab[@]}") us, B to A $(imedian "${cfm_ba[@]}") us (p50);"
one_broker+=" the runs' own clocks: $(imedian "${cfm_lua[@]}") us per hop on average;"
one_broker+=" managers' CPU $(imedian "${cfm_cpu[@]}") us per round trip"
figure event_hop_p50_us "$p50" us "$raw50" ratio 3
figure event_hop_p99_us "$p99" us "$raw99" ratio 5
kill_manager site-a
kill_manager site-b
stop_broker s

# --- A and B on two bridged brokers --------------------------------------------
# bridged NAME-A NAME-B ROUNDS [PRELOAD]: brokers NAME-A (bridged to
# NAME-B, started with LD_PRELOAD=PRELOAD when given) and NAME-B, a fresh
# pair of managers on them, ROUNDS rounds of cfm and raw. Sets bp50 and
# braw50 (medians) and bridged_info.
bridged() {
    local a=$1 b=$2 rounds=$3 preload=${4:-}
    bench_broker "$b"
    if [ -n "$preload" ]; then
        LD_PRELOAD=$preload bench_broker "$a" "$(hop_bridge "$a" "$b")"
    else
        bench_broker "$a" "$(hop_bridge "$a" "$b")"
    fi
    probe_bridge() { mosquitto_pub -p "${BROKER_PORT[$a]}" -q 1 -r -t cfm/v1/bench/probe -m up &&
                     [ "$(retained "$b" cfm/v1/bench/probe)" = up ]; }
    wait_until 20 "the bridge $a-$b carrying messages" probe_bridge
    pair "$a" "$b"
    reset_samples
    for r in $(seq 1 "$rounds"); do
        cfm_round "$a$r"
        raw_round "$a$r" "${BROKER_PORT[$b]}"
    done
    bp50=$(imedian "${cfm_hop50[@]}")
    braw50=$(imedian "${raw_hop50[@]}")
    bridged_info="A to B $(imedian "${cfm_ab[@]}") us, B to A $(imedian "${cfm_ba[@]}") us as"
    bridged_info+=" seen at A's broker; managers' CPU $(imedian "${cfm_cpu[@]}") us per round trip"
    kill_manager site-a
    kill_manager site-b
    stop_broker "$a"
    stop_broker "$b"
}

bridged_text="(BENCH_HOP_BRIDGED_ROUNDS=0: the bridged figures were not measured)"
if [ "$BRIDGED_ROUNDS" -gt 0 ]; then
    # As deployed (broker-config's settings): mosquitto 2.0.11 sets TCP_NODELAY
    # (set_tcp_nodelay) only on the connections it accepts, not on the one a
    # bridge opens, so what the bridging broker sends over its bridge waits for
    # the peer's delayed ACK (~40 ms; Nagle's algorithm): the figure is the
    # bridge's, for cfm and raw alike. Fewer round trips, as each takes ~45 ms.
    COUNT=${BENCH_HOP_BRIDGED_COUNT:-150}
    step "two bridged brokers (as deployed): site-a on a, site-b on b, $BRIDGED_ROUNDS rounds of $COUNT"
    bridged a b "$BRIDGED_ROUNDS"
    nagle50=$bp50 nagle_raw50=$braw50 nagle_info=$bridged_info nagle_count=$COUNT
    figure event_hop_bridged_p50_us "$nagle50" us "$nagle_raw50" ratio 2

    # The same with TCP_NODELAY on the bridge's own socket too (a connect()
    # wrapper preloaded into the bridging broker, built here): what cfm adds
    # to a hop across a bridge once the bridge itself is fast.
    COUNT=${BENCH_HOP_COUNT:-500}
    nodelay=$TMP/nodelay.so
    cat >"$TMP/nodelay.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    int one = 1;
    if (!real)
        real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return real(fd, addr, len);
}
EOF
    if cc -shared -fPIC -O2 -o "$nodelay" "$TMP/nodelay.c" -ldl 2>>"$TMP/nodelay.log"; then
        step "two bridged brokers, TCP_NODELAY on the bridge too: $BRIDGED_ROUNDS rounds of $COUNT"
        bridged a2 b2 "$BRIDGED_ROUNDS" "$nodelay"
        figure event_hop_bridged_nodelay_p50_us "$bp50" us "$braw50" ratio 2
        nodelay_text="With TCP_NODELAY on the bridge's socket as well: p50 ${bp50} us against"
        nodelay_text+=" ${braw50} us ($bridged_info)."
    else
        nodelay_text="(no C compiler: the variant with TCP_NODELAY on the bridge was not run)"
    fi
    bridged_text="Across a bridge as deployed: p50 ${nagle50} us against ${nagle_raw50} us"
    bridged_text+=" ($nagle_count round trips; $nagle_info): the bridge's Nagle delay, for both."
    bridged_text+=" $nodelay_text"
fi
echo "summary: one hop between procedure runs (publish_cloud_event until the other" \
    "side's wait_cloud_event resumed and answered; half a round trip; $SKIP round trips" \
    "not counted) took p50 ${p50} us and p99 ${p99} us with both managers on one broker" \
    "(medians of $ROUNDS rounds of $COUNT; $one_broker), against ${raw50} us and ${raw99} us" \
    "for two plain clients bouncing a QoS 1 message of $size bytes, watched alike (p50" \
    "${own50} us by the clients' own clock). $bridged_text"
