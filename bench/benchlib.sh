# benchlib.sh - what every bench/bench_*.sh shares. Sourced, never run.
#
# It sources the integration tests' lib.sh (real brokers on free ports,
# real managers in a temporary directory, bounded waits, every process
# killed on exit) and adds: the bridged three-site federation of
# test_federation.sh, the generator of large system descriptions, and
# `figure`, which prints the one line per figure that bench/run.sh and
# docs/performance.md rely on:
#
#   bench: NAME value=V UNIT baseline=B ratio=R PASS|MISS (target ...)
#
# Environment: CFM_BUILD (default build-release), CFM_SRC (the tree).

CFM_SRC=${CFM_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
case ${CFM_BUILD:-} in
"") CFM_BUILD=$CFM_SRC/build-release ;;
/*) ;;
*) CFM_BUILD=$CFM_SRC/$CFM_BUILD ;;
esac
export CFM_SRC CFM_BUILD
# shellcheck source=../tests/integration/lib.sh
source "$CFM_SRC/tests/integration/lib.sh"

# BENCH_KEEP=DIR keeps the logs and stores of a run there (for profiling and
# reading what happened); lib.sh removes its temporary directory on exit.
# An absolute path: a relative one ("1", meant as "yes") would land in
# whatever directory the benchmark was started from, the source tree too.
if [ -n "${BENCH_KEEP:-}" ]; then
    case $BENCH_KEEP in
    /*) ;;
    *) fail "BENCH_KEEP=$BENCH_KEEP: give an absolute directory, e.g. BENCH_KEEP=/tmp/bench-keep" ;;
    esac
    bench_keep() {
        local status=$?
        mkdir -p "$BENCH_KEEP" && cp -a "$TMP/." "$BENCH_KEEP/" 2>/dev/null
        return "$status"
    }
    trap 'bench_keep; cleanup' EXIT
fi

# cfm-agent: the manager refuses to start without its local driver's agent.
for tool in cfm-manager cfm-agent cfmctl cfm-freeport cfm-bench-raw cfm-bench-agree cfm-bench-gen; do
    [ -x "$CFM_BUILD/$tool" ] || fail "$CFM_BUILD/$tool is missing: run 'make bench-build' first"
done

# The largest system a single `cfmctl system load` carries: CFM_MAX_OBJECTS
# (10,000) objects, the example's own and Address objects added to it; with
# bodies sized like the example's Address that is ~90% of CFM_MAX_PAYLOAD
# once escaped into the request (cfm-bench-gen checks).
BENCH_OBJECTS=10000

# bench_system OUT TOTAL MARK: examples/web3tier.json with sites a, b and c,
# every description prefixed with MARK (so a new MARK changes every object),
# grown with Address objects to TOTAL objects (0: as it is).
bench_system() {
    "$CFM_BUILD/cfm-bench-gen" --in "$CFM_SRC/examples/web3tier.json" --out "$1" \
        --sites site-a,site-b,site-c --mark "$3" --total "$2" >/dev/null ||
        fail "bench setup: cannot generate $1"
}

# The brokers run the queue and persistence settings of a deployed site
# (broker-config/mosquitto.conf), not mosquitto's defaults: with the default
# max_queued_messages (1000) a burst of 10,000 QoS 1 messages overflows the
# bridge's queue and mosquitto drops the excess, for cfm and raw clients alike.
BROKER_SETTINGS=(max_queued_messages max_queued_bytes max_inflight_messages max_packet_size
                 set_tcp_nodelay autosave_interval)
BROKER_CONF=()
for key in "${BROKER_SETTINGS[@]}"; do
    line=$(grep -E "^$key " "$CFM_SRC/broker-config/mosquitto.conf" 2>/dev/null) ||
        fail "broker-config/mosquitto.conf has no '$key' line"
    BROKER_CONF+=("$line")
done

# bench_broker NAME [EXTRA-CONFIG-LINE...]: start_broker with those settings.
bench_broker() {
    local name=$1
    shift
    start_broker "$name" "${BROKER_CONF[@]}" "$@"
}

# bridge_to NAME PEER: config lines for the bridges from broker NAME to
# broker PEER, split as broker-config/bridge-to-PEER.conf.example splits a
# deployed site's: the retained topics on a connection without a persistent
# session (each connection sends the current retained values once), the
# others on one with a persistent session (queued while the peer is away).
# One connection for everything with a persistent session queues a copy of
# every retained object at each attempt to reconnect; mosquitto 2.0.11 then
# dropped the bridge "due to out of memory" after heals here, and
# convergence waited for it to come back (docs/performance.md, "Session 5").
# MQTT 5 and try_private as deployed; "both" directions, since these
# brokers form a hub (a and c bridged to b) rather than the relayed mesh.
bridge_to() {
    local t
    echo "connection $1-to-$2-state"
    echo "address 127.0.0.1:${BROKER_PORT[$2]}"
    echo "bridge_protocol_version mqttv50"
    echo "try_private true"
    echo "cleansession true"
    for t in "site/+/status" "sys/+/obj/#" "sys/+/run/#" "agent/+/status" "bridge/#"; do
        echo "topic cfm/v1/$t both 1"
    done
    echo "restart_timeout 1 2"
    echo "notifications true"
    # As deployed: the link's state where every site's health reads it
    # (a peer whose bridge is up counts as online again after a heal).
    echo "notification_topic cfm/v1/bridge/site-$1/site-$2/state"
    echo "connection $1-to-$2-messages"
    echo "address 127.0.0.1:${BROKER_PORT[$2]}"
    echo "bridge_protocol_version mqttv50"
    echo "try_private true"
    echo "cleansession false"
    for t in "sys/+/event/#" "sys/+/sync" "site/+/ctl/req" "ctl/res/#" "agent/+/req" "agent/+/res/#"; do
        echo "topic cfm/v1/$t both 1"
    done
    echo "restart_timeout 1 2"
    echo "notifications false"
}

# federation: brokers a and c bridged to b (the hub), one manager on each,
# and the example system (sites a, b, c) loaded at A and agreed on by all,
# so B and C are members subscribed to the system before anything is timed.
federation() {
    bench_broker b
    bench_broker a "$(bridge_to a b)"
    bench_broker c "$(bridge_to c b)"
    start_manager site-a a
    start_manager site-b b
    start_manager site-c c
    bench_system "$TMP/shop-warmup.json" 0 w
    ctl site-a system load "$TMP/shop-warmup.json" >/dev/null || fail "loading the example at A"
    agree_with_a 30 >/dev/null || fail "B and C did not receive the example"
}

store_of() { echo "$TMP/$1/cfm.db"; }

# agree_with_a TIMEOUT [SINCE]: waits until B and C hold exactly A's objects
# of shop; prints cfm-bench-agree's line (seconds since SINCE, an
# $EPOCHREALTIME, or since now).
agree_with_a() {
    "$CFM_BUILD/cfm-bench-agree" --system shop --ref "$(store_of site-a)" --timeout "$1" \
        ${2:+--since "$2"} "$(store_of site-b)" "$(store_of site-c)"
}

pending_zero() {
    ctl "$1" --json ping | grep -q '"pending": 0'
}

# cpu_snapshot: "NAME SECONDS" (user + system CPU so far) for every process
# started here. On a shared machine CPU seconds vary less than elapsed time,
# so the benchmarks print them next to their figures (not as figures).
cpu_snapshot() {
    local tk name
    tk=$(getconf CLK_TCK)
    for name in "${!PIDS[@]}"; do
        awk -v n="$name" -v tk="$tk" '{ printf "%s %.2f\n", n, ($14 + $15) / tk }' \
            "/proc/${PIDS[$name]}/stat" 2>/dev/null
    done | sort
}

# cpu_used BEFORE AFTER: the CPU seconds used between two snapshots: in all,
# by the managers (and each) and by the brokers; a process started in
# between counts from zero.
cpu_used() {
    awk 'NR == FNR { before[$1] = $2; next }
         { d = $2 - before[$1]
           if ($1 ~ /^manager-/) { m += d; each = each sprintf(" %s=%.2f", substr($1, 9), d) }
           else if ($1 ~ /^broker-/) b += d }
         END { printf "cpu_s: total=%.2f managers=%.2f (%s) brokers=%.2f\n", m + b, m,
                      substr(each, 2), b }' \
        <(echo "$1") <(echo "$2")
}

# field LINE KEY: the value of KEY=VALUE in a tool's output line.
field() {
    local word
    for word in $1; do
        case $word in "$2="*) echo "${word#*=}"; return 0 ;; esac
    done
    fail "no $2= in: $1"
}

# median N...: the median of some numbers.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# figure NAME VALUE UNIT BASELINE CHECK LIMIT: prints the figure's line.
# BASELINE is "-" when there is none. CHECK is "ratio" (value / baseline
# must be <= LIMIT) or "value" (value must be <= LIMIT).
figure() {
    local name=$1 value=$2 unit=$3 baseline=$4 check=$5 limit=$6 ratio=- verdict
    # A baseline of 0 (nothing measured) gives no ratio, and so a MISS.
    if [ "$baseline" != - ]; then
        ratio=$(awk -v v="$value" -v b="$baseline" 'BEGIN { if (b > 0) printf "%.2f", v / b; else print "-" }')
    fi
    if [ "$check" = ratio ]; then
        verdict=$(awk -v r="$ratio" -v l="$limit" 'BEGIN { print ((r != "-" && r + 0 <= l + 0) ? "PASS" : "MISS") }')
        echo "bench: $name value=$value $unit baseline=$baseline ratio=$ratio $verdict (target ratio <= $limit)"
    else
        verdict=$(awk -v v="$value" -v l="$limit" 'BEGIN { print ((v + 0 <= l + 0) ? "PASS" : "MISS") }')
        echo "bench: $name value=$value $unit baseline=$baseline ratio=$ratio $verdict (target <= $limit $unit)"
    fi
}
