# dr-lib.sh - the two-site federation of the DR demo, shared by
# scripts/demo.sh (narrated) and tests/integration/test_dr.sh (asserted).
# Sourced; the caller sets BUILD, DIR (an empty temp dir) and defines
# say() and fail(). Every process started is recorded in DR_PIDS, every VM
# in the sites' state dirs; dr_cleanup stops them all.

declare -A DR_PORT=()
declare -A DR_NET=()
declare -a DR_PIDS=()
DR_SRC=${DR_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# Where the sites of every run using this file claim their addresses.
DR_NETS=${DR_NETS:-${TMPDIR:-/tmp}/cfm-dr-nets}

dr_wait() { # SECONDS DESCRIPTION COMMAND...: a bounded poll on a condition
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "gave up after ${limit}s waiting for: $what"
        sleep 0.1
    done
}

# dr_broker NAME [PEER...]: a Mosquitto for site NAME, bridged to each PEER
# (cfm/v1/# both ways; with two sites, or a hub, there is no loop). The
# bridge announces its link on cfm/v1/bridge/NAME/PEER/state, which crosses
# the bridges: every site learns when a site's broker is gone.
dr_broker() {
    local name=$1 port
    shift
    port=${DR_PORT[$name]:-$("$BUILD/cfm-freeport")}
    DR_PORT[$name]=$port
    mkdir -p "$DIR/broker-$name"
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence true"
        echo "persistence_location $DIR/broker-$name/"
        echo "max_queued_messages 100000"
        echo "set_tcp_nodelay true"
        [ "$(id -u)" -eq 0 ] && echo "user root"
        for peer in "$@"; do
            echo "connection $name-to-$peer"
            echo "address 127.0.0.1:${DR_PORT[$peer]}"
            echo "topic cfm/v1/# both 1"
            echo "cleansession false"
            echo "try_private true"
            echo "bridge_protocol_version mqttv50"
            echo "restart_timeout 1 2"
            echo "notifications true"
            echo "notification_topic cfm/v1/bridge/$name/$peer/state"
        done
    } >"$DIR/broker-$name/mosquitto.conf"
    mosquitto -c "$DIR/broker-$name/mosquitto.conf" >>"$DIR/broker-$name.log" 2>&1 &
    DR_PIDS+=($!)
    eval "DR_BROKER_PID_${name//-/_}=$!"
    dr_wait 10 "broker $name" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
}

# dr_net SITE: sets DR_NET[SITE], the N of the site's private net 127.77.N
# and public pool 127.78.N, to one no other site holds, of this run or of
# another running at the same time (ctest -j): two sites on one net give two
# VMs one address, and a service started on one of them would find its
# address taken and its health check answered by the other's. The claim is
# a directory DR_NETS/N naming its owner (this shell); dr_cleanup drops it,
# and a claim whose owner is gone (killed before its cleanup) is taken over.
dr_net() {
    local site=$1 n k owner
    [ -z "${DR_NET[$site]:-}" ] || return 0
    mkdir -p "$DR_NETS" || fail "cannot create $DR_NETS"
    for ((k = 0; k < 250; k++)); do
        n=$(((DR_PORT[$site] + k) % 250 + 1))
        if ! mkdir "$DR_NETS/$n" 2>/dev/null; then
            owner=$(cat "$DR_NETS/$n/owner" 2>/dev/null)
            [ -n "$owner" ] || continue # being claimed right now, or unreadable
            { kill -0 "$owner" 2>/dev/null || [ -d "/proc/$owner" ]; } && continue
            mv "$DR_NETS/$n" "$DR_NETS/$n.stale.$$" 2>/dev/null || continue
            rm -rf "$DR_NETS/$n.stale.$$"
            mkdir "$DR_NETS/$n" 2>/dev/null || continue
        fi
        echo $$ >"$DR_NETS/$n/owner"
        DR_NET[$site]=$n
        return 0
    done
    fail "no free private net 127.77.N left (claims in $DR_NETS)"
}

# dr_manager SITE CPU: the manager of SITE on its broker, with the standard
# procedures and a local cloud of CPU vCPUs. A site started again keeps its
# net.
dr_manager() {
    local site=$1 cpu=$2
    dr_net "$site"
    cat >"$DIR/$site.json" <<CONF
{"site": "$site", "broker": {"host": "127.0.0.1", "port": ${DR_PORT[$site]}},
 "state_dir": "$DIR/$site", "procedures_dir": "$DR_SRC/procedures",
 "driver": {"type": "local", "capacity": {"cpu": $cpu, "memory_mb": 16384},
            "private_net": "127.77.${DR_NET[$site]}"}}
CONF
    "$BUILD/cfm-manager" --config "$DIR/$site.json" >>"$DIR/$site.log" 2>&1 &
    DR_PIDS+=($!)
    eval "DR_MANAGER_PID_${site//-/_}=$!"
    dr_wait 15 "manager $site" dr_ctl "$site" -t 0.5 ping
}

dr_ctl() { # SITE ARGS...: cfmctl through SITE's broker
    local site=$1
    shift
    "$BUILD/cfmctl" -b "127.0.0.1:${DR_PORT[$site]}" -s "$site" "$@"
}

# dr_run SITE TYPE PAYLOAD TIMEOUT: publishes TYPE on shop, waits for the run
# it starts (at whichever site) and prints that run's result as JSON.
dr_run() {
    local site=$1 type=$2 payload=$3 timeout=$4 id run
    id=$(dr_ctl "$site" --json event publish shop "$type" "$payload" | grep '"id"' | head -n 1 |
         cut -d'"' -f4)
    [ -n "$id" ] || fail "could not publish $type"
    dr_wait 20 "a run of $type" dr_find_run "$site" "$id"
    run=$(dr_find_run "$site" "$id")
    dr_ctl "$site" runs wait "$run" --timeout "$timeout" >/dev/null ||
        fail "$type failed: $(dr_ctl "$site" runs show "$run" | tail -n 30)"
    dr_ctl "$site" --json runs show "$run"
}

dr_find_run() { # SITE EVENT-ID: the run started by that event, if any yet
    local out
    out=$(dr_ctl "$1" --json runs list --system shop | tr -d '",' |
          awk -v want="$2" '$1 == "id:" {run = $2}
                            $1 == "event_id:" && $2 == want {hit = 1}
                            /^  }/ {if (hit) print run; hit = 0}')
    [ -n "$out" ] && echo "$out" | head -n 1
}

# dr_public SITE: the lb's public address (IP) at SITE, from the model.
dr_public() {
    dr_ctl "$1" vms list --system shop --site "$1" | awk '$4 == "running" && $8 != "-" {print $8}' |
        head -n 1
}

dr_http() { # URL: prints the body; on an HTTP error says which on stderr and fails
    local out code
    out=$(curl -s --max-time 3 -w '\n%{http_code}' "$1")
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$code" != 200 ]; then
        echo "GET $1: HTTP ${code:-none}: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# dr_kill_site SITE: kill -9 the site's manager, broker and every VM.
dr_kill_site() {
    local site=$1 var
    var="DR_MANAGER_PID_${site//-/_}"
    kill -KILL "${!var}" 2>/dev/null
    var="DR_BROKER_PID_${site//-/_}"
    kill -KILL "${!var}" 2>/dev/null
    for vmjson in "$DIR/$site"/vms/*/vm.json; do
        [ -f "$vmjson" ] || continue
        local pid
        pid=$(grep -o '"pid": *[0-9]*' "$vmjson" | grep -o '[0-9]*$')
        [ "${pid:-0}" -gt 0 ] && kill -KILL -- "-$pid" 2>/dev/null  # 0: terminated (and "-0" is our own group)
    done
    return 0
}

dr_cleanup() {
    for pid in "${DR_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    # The managers first: a run may be starting a VM right now (failback's
    # replica at the standby), and its record is written by the time its
    # manager has exited, not necessarily when the TERM arrives.
    wait "${DR_PIDS[@]}" 2>/dev/null
    for vmjson in "$DIR"/*/vms/*/vm.json; do
        [ -f "$vmjson" ] || continue
        local pid
        pid=$(grep -o '"pid": *[0-9]*' "$vmjson" | grep -o '[0-9]*$')
        [ "${pid:-0}" -gt 0 ] && kill -KILL -- "-$pid" 2>/dev/null  # 0: terminated (and "-0" is our own group)
    done
    pkill -KILL -f -- "cfm-agent .*--root $DIR/" 2>/dev/null # one no record names (a killed manager's)
    wait 2>/dev/null
    local n
    for n in "${DR_NET[@]}"; do
        [ "$(cat "$DR_NETS/$n/owner" 2>/dev/null)" = "$$" ] && rm -rf "${DR_NETS:?}/$n"
    done
    return 0
}
