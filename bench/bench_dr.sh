#!/usr/bin/env bash
# dr_rto_10vm_s (and dr_rto_50vm_s, dr_rto_100vm_s): the disaster recovery
# of test_dr.sh and the demo (scripts/dr-lib.sh: two bridged sites, the
# standard procedures, the local cloud driver with real cfm-agent VMs and
# cfm-svc services), with the example shop scaled so that the recovery
# starts N VMs at site-b: db, lb and N-2 web servers (web's count raised).
# For each N: deploy at site-a (db, web, lb there, the db replica at
# site-b), kill site-a (manager, broker, every VM), publish dr at site-b
# with a plain MQTT client, and time until dr_completed arrives
# (cfm-bench-raw ask); and until site-b's lb first answers HTTP.
#
# Baseline, in the same run on site-b's broker just before the DR: N
# cfm-agent processes started at once without a manager, until every one
# has published its online status (cfm-bench-raw agents; median of three):
# what starting N local VMs costs at the least. The recovery does more per
# VM (the element's volumes, address, config and service, its health check
# through the agent, dependency order db -> web -> lb): the target allows
# for it.
#
# The first size's scenario runs BENCH_DR_REPEAT times (3 unless set) and
# its figures are the medians: every other size is measured against it.
#
# Targets: 10 VMs within 2x the direct start; from 10 VMs to 50 and 100
# no worse than linear (dr_rto_Nvm_s <= N/10 x dr_rto_10vm_s, which is the
# baseline printed on those lines). BENCH_DR_VMS picks the sizes (default
# "10 50 100": about 1.5 minutes on 2 idle cores, most of it the 100-VM
# deploy and DR; BENCH_DR_VMS=10 takes 15 s).
# See docs/performance.md.
source "$(dirname "$0")/benchlib.sh"
BUILD=$CFM_BUILD
DIR=$TMP
say() { step "$*"; }
# shellcheck source=../scripts/dr-lib.sh
source "$CFM_SRC/scripts/dr-lib.sh"
dr_bench_exit() {
    local st=$?
    dr_cleanup
    if [ -n "${BENCH_KEEP:-}" ]; then (exit "$st"); bench_keep; fi
    (exit "$st")
    cleanup
}
trap dr_bench_exit EXIT

# dr-lib.sh's brokers with the settings of a deployed site added (those of
# every benchmark, BROKER_CONF: set_tcp_nodelay, the queue limits, ...);
# test_dr.sh runs mosquitto's defaults for the rest.
dr_broker() {
    local name=$1 peer=${2:-} port line
    port=${DR_PORT[$name]:-$("$BUILD/cfm-freeport")}
    DR_PORT[$name]=$port
    mkdir -p "$DIR/broker-$name"
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence true"
        echo "persistence_location $DIR/broker-$name/"
        for line in "${BROKER_CONF[@]}"; do echo "$line"; done
        [ "$(id -u)" -eq 0 ] && echo "user root"
        if [ -n "$peer" ]; then
            echo "connection $name-to-$peer"
            echo "address 127.0.0.1:${DR_PORT[$peer]}"
            echo "topic cfm/v1/# both 1"
            echo "cleansession false"
            echo "try_private true"
            echo "bridge_protocol_version mqttv50"
            echo "restart_timeout 1 2"
            echo "notifications true"
        fi
    } >"$DIR/broker-$name/mosquitto.conf"
    mosquitto -c "$DIR/broker-$name/mosquitto.conf" >>"$DIR/broker-$name.log" 2>&1 &
    DR_PIDS+=($!)
    eval "DR_BROKER_PID_${name//-/_}=$!"
    dr_wait 10 "broker $name" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
}

SIZES=${BENCH_DR_VMS:-10 50 100}
REPEAT=${BENCH_DR_REPEAT:-3}   # scenarios of the first size (medians)
LIMIT=240   # seconds for one deploy and one DR
PROCS=$CFM_SRC/procedures

# shop_with N: the example with web's count (and max) raised so that the
# elements placed at the primary (db, web, lb) are N VMs.
shop_with() {
    jq --argjson web "$(($1 - 2))" \
        '.objects.BusinessSystemElement.web.count = $web
         | .objects.BusinessSystemElement.web.max = ([$web, .objects.BusinessSystemElement.web.max] | max)' \
        "$CFM_SRC/examples/web3tier.json" >"$DIR/shop-$1.json" || fail "jq: cannot scale the example"
}

# site_manager SITE CPU: dr_manager's configuration (standard procedures,
# the local driver) with room for CPU vCPUs and ample memory.
site_manager() {
    local site=$1 cpu=$2 net
    dr_net "$site"  # a net no other site holds, as dr_manager's
    net="127.77.${DR_NET[$site]}"
    cat >"$DIR/$site.json" <<CONF
{"site": "$site", "broker": {"host": "127.0.0.1", "port": ${DR_PORT[$site]}},
 "state_dir": "$DIR/$site", "procedures_dir": "$PROCS",
 "driver": {"type": "local", "capacity": {"cpu": $cpu, "memory_mb": 1048576},
            "private_net": "$net"}}
CONF
    "$BUILD/cfm-manager" --config "$DIR/$site.json" >>"$DIR/$site.log" 2>&1 &
    DR_PIDS+=($!)
    PIDS["dr-manager-$site"]=$!
    eval "DR_MANAGER_PID_${site//-/_}=$!"
    dr_wait 15 "manager $site" dr_ctl "$site" -t 0.5 ping
}

count_running() {  # SITE ELEMENT: its running VMInstances at SITE
    dr_ctl "$1" vms list --system shop --site "$1" | awk -v e="$2" '$6 == e && $4 == "running"' |
        wc -l
}

a_offline() { dr_ctl site-b sites list | grep site-a | grep -q offline; }

# first_http ADDR PORT OUT: asks http://ADDR:PORT/ every 10 ms (cfm-bench-raw
# http: one process sleeping between tries, not a shell starting processes
# on the cores the recovery runs on), for at most LIMIT seconds; writes the
# wall-clock time of the first answer to OUT.
first_http() {
    local out
    out=$("$CFM_BUILD/cfm-bench-raw" http --addr "$1" --port "$2" --every-ms 10 \
        --timeout "$LIMIT") || return 1
    field "$out" first_epoch_s >"$3"
}

# stages: when each element's last instance came up in site-b's DR run
# (its log's "instance ... up" lines), in seconds from the run's start:
# "db +0.16 s, web +0.41 s, lb +0.58 s".
stages() {
    awk '
        function ms(line,   t) { split(substr(line, 12, 12), t, ":"); return (t[1] * 3600 + t[2] * 60 + t[3]) * 1000 }
        /engine: run .* started: dr\.lua/ { t0 = ms($0); n = 0; delete last; delete seen; next }
        t0 && /: instance .* up at / {
            el = $5; sub(/:$/, "", el)
            if (!(el in seen)) { seen[el] = 1; order[++n] = el }
            last[el] = ms($0)
        }
        END { for (i = 1; i <= n; i++) printf "%s%s +%.2f s", (i > 1 ? ", " : ""), order[i], (last[order[i]] - t0) / 1000 }
    ' "$DIR/site-b.log"
}

cpu_s() {  # cpu_s PID: user + system CPU seconds so far
    awk -v tk="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / tk }' "/proc/$1/stat"
}

declare -A RTO=() DIRECT=()
summary=()

# one_size N: the whole scenario for N VMs, on fresh brokers and managers.
one_size() {
    local n=$1 out t0 c0 cpu t_deploy lb_b http_s rto_run direct=() site
    step "$n VMs: two bridged sites, the shop with $((n - 2)) web servers, deployed at site-a"
    shop_with "$n"
    for site in site-a site-b broker-site-a broker-site-b; do rm -rf "${DIR:?}/$site"; done
    DR_PORT=()
    dr_broker site-a
    dr_broker site-b site-a
    site_manager site-a $((n + 8))
    site_manager site-b $((n + 8))
    out=$(dr_ctl site-a system load "$DIR/shop-$n.json") || fail "load: $out"
    t0=$EPOCHREALTIME
    dr_run site-a deploy "{}" "$LIMIT" >/dev/null
    t_deploy=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    assert_eq "$((n - 2))" "$(count_running site-a web)" "web at site-a after deploy"
    assert_eq 1 "$(count_running site-b db-replica)" "db replica at site-b after deploy"
    step "$n VMs: deployed in ${t_deploy}s; site-a is killed (manager, broker, VMs)"
    dr_kill_site site-a
    wait_until 30 "site-b to see site-a offline" a_offline

    for i in 1 2 3; do
        mkdir -p "$DIR/direct-$n-$i"
        out=$("$CFM_BUILD/cfm-bench-raw" agents --port "${DR_PORT[site-b]}" --count "$n" \
            --agent "$BUILD/cfm-agent" --dir "$DIR/direct-$n-$i" \
            --net "127.79.$((DR_PORT[site-b] % 250 + 1))" --timeout 120) ||
            fail "$n agents started directly"
        step "direct start $i: $out"
        direct+=("$(field "$out" seconds)")
    done
    DIRECT[$n]=$(median "${direct[@]}")

    # site-b's public pool is 127.78.<its private net's third octet>.1-50,
    # and nothing at site-b holds an address yet: the lb gets the first.
    lb_b="127.78.${DR_NET[site-b]}.1"
    first_http "$lb_b" 8000 "$DIR/http-$n" &
    PIDS["first-http"]=$!
    c0=$(cpu_s "${PIDS[dr-manager-site-b]}")
    t0=$EPOCHREALTIME
    out=$("$CFM_BUILD/cfm-bench-raw" ask --port "${DR_PORT[site-b]}" --keys "$n" \
        --send-topic cfm/v1/sys/shop/event/dr \
        --send '{"id": "dr-{k}", "payload": {"target_site": "site-b"}}' \
        --expect-topic cfm/v1/sys/shop/event/dr_completed --expect '"site":"site-b"' \
        --timeout "$LIMIT") || fail "no dr_completed for $n VMs: $(tail -n 5 "$DIR/site-b.log")"
    RTO[$n]=$(awk -v us="$(field "$out" median_us)" 'BEGIN { printf "%.3f", us / 1e6 }')
    cpu=$(awk -v a="$c0" -v b="$(cpu_s "${PIDS[dr-manager-site-b]}")" 'BEGIN { printf "%.2f", b - a }')
    wait_until 10 "site-b's lb answering on $lb_b" test -s "$DIR/http-$n"
    wait "${PIDS["first-http"]}" 2>/dev/null
    unset "PIDS[first-http]"
    http_s=$(awk -v a="$t0" -v b="$(cat "$DIR/http-$n")" 'BEGIN { printf "%.2f", b - a }')
    assert_eq "$lb_b" "$(dr_public site-b)" "the lb's public address at site-b"
    assert_eq "$((n - 2))" "$(count_running site-b web)" "web at site-b after the DR"
    assert_eq 1 "$(count_running site-b lb)" "lb at site-b after the DR"
    rto_run=$(dr_ctl site-b --json runs show "$(dr_find_run site-b "dr-$n")" |
        tr -d ' ,' | awk -F: '$1 == "\"rto_ms\"" { print $2; exit }')
    step "$n VMs: dr_completed ${RTO[$n]}s after the event (the run's own rto_ms: $rto_run)," \
        "first HTTP answer from site-b's lb after ${http_s}s; direct start of $n agents:" \
        "${DIRECT[$n]}s (median of ${direct[*]}); site-b's manager used ${cpu}s of CPU;" \
        "elements up: $(stages)"
    summary+=("$n VMs: RTO ${RTO[$n]}s (direct start ${DIRECT[$n]}s, first HTTP ${http_s}s, site-b's manager ${cpu} CPU s, deploy ${t_deploy}s)")

    # Everything of this size goes before the next one starts.
    dr_kill_site site-b
    for pid in "${DR_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    DR_PIDS=()
    unset "PIDS[dr-manager-site-a]" "PIDS[dr-manager-site-b]"
}

first=${SIZES%% *}
for n in $SIZES; do
    if [ "$n" != "$first" ] || [ "$REPEAT" -le 1 ]; then
        one_size "$n"
        continue
    fi
    # The first size is every other size's yardstick: its figures are the
    # medians of REPEAT whole scenarios, so that one noisy recovery does
    # not move four figures.
    rtos=() directs=()
    for _ in $(seq "$REPEAT"); do
        one_size "$n"
        rtos+=("${RTO[$n]}")
        directs+=("${DIRECT[$n]}")
    done
    RTO[$n]=$(median "${rtos[@]}")
    DIRECT[$n]=$(median "${directs[@]}")
    step "$n VMs, $REPEAT times: dr_completed after ${RTO[$n]}s (median of ${rtos[*]});" \
        "direct start ${DIRECT[$n]}s (median of ${directs[*]})"
done

for n in $SIZES; do
    if [ "$n" = "$first" ]; then
        figure "dr_rto_${n}vm_s" "${RTO[$n]}" s "${DIRECT[$n]}" ratio 2
    else
        # Linear growth from the first size: at most n/first times its RTO.
        figure "dr_rto_${n}vm_s" "${RTO[$n]}" s \
            "$(awk -v r="${RTO[$first]}" -v n="$n" -v f="$first" 'BEGIN { printf "%.3f", r * n / f }')" \
            ratio 1
    fi
done
echo "summary: DR at site-b after site-a was killed, from the dr event to dr_completed;" \
    "baselines: starting the same number of cfm-agent processes directly (first size)," \
    "linear growth from the first size (the others). $(IFS='|'; t="${summary[*]}"; echo "${t//|/; }")"
