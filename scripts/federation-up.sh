#!/usr/bin/env bash
# federation-up.sh N - a whole federation on this machine: N Mosquitto
# brokers in a full mesh (site-1 ... site-N), each with the shipped
# broker-config/ (password file, ACL, relay, bridges; rendered by
# scripts/gen-broker-config.sh into a temporary directory, on free loopback
# ports), and a cfm-manager per site logged in as its site. Prints how to
# reach each site, then waits; Ctrl-C (or SIGTERM) stops everything it
# started and removes the temporary directory.
#
# Run from the repository root after
#   cmake -S . -B build && cmake --build build
# CFM_BUILD=DIR uses another build directory; KEEP=1 keeps the directory.
set -euo pipefail

usage() {
    echo "usage: $0 N   (N sites, 1 to 26)" >&2
    exit 2
}
[ $# -eq 1 ] && [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 26 ] || usage
n=$1

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${CFM_BUILD:-build}
build=$(cd "$build" 2>/dev/null && pwd) || {
    echo "$0: no build directory '${CFM_BUILD:-build}': run cmake -S . -B build && cmake --build build" >&2
    exit 1
}
for prog in cfm-manager cfmctl cfm-freeport; do
    [ -x "$build/$prog" ] || { echo "$0: $build/$prog is missing: build first" >&2; exit 1; }
done
command -v mosquitto >/dev/null || { echo "$0: mosquitto is not installed" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/cfm-federation.XXXXXX")
declare -a pids=()

stop_all() {
    trap - INT TERM EXIT
    echo
    echo "stopping the federation..."
    local i
    # Managers first (they publish "offline" while their broker is up),
    # then the brokers; each by the process id we started.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
    if [ -n "${KEEP:-}" ]; then
        echo "kept $dir"
    else
        rm -rf "$dir"
    fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$0: timed out waiting for $what; logs in $dir" >&2
            KEEP=1
            exit 1
        fi
        sleep 0.1
    done
}

# Free ports, all different (the kernel could hand out one twice).
declare -a sites=() ports=() args=()
for ((i = 1; i <= n; i++)); do
    while :; do
        p=$("$build/cfm-freeport")
        [[ " ${ports[*]} " == *" $p "* ]] || break
    done
    sites+=("site-$i")
    ports+=("$p")
    args+=("site-$i=$p")
done

"$src/scripts/gen-broker-config.sh" local "$dir" "${args[@]}"

for i in "${!sites[@]}"; do
    site=${sites[$i]}
    mosquitto -c "$dir/$site/mosquitto.conf" >"$dir/$site/mosquitto.log" 2>&1 &
    pids+=($!)
    wait_for 10 "broker $site on port ${ports[$i]}" port_open "${ports[$i]}"
done

ctl() {  # ctl I ARGS...: cfmctl as operator at site I's broker
    "$build/cfmctl" -b "127.0.0.1:${ports[$1]}" -u operator -P "$dir/secrets/operator.pw" \
        -s "${sites[$1]}" "${@:2}"
}

for i in "${!sites[@]}"; do
    site=${sites[$i]}
    "$build/cfm-manager" --site "$site" --broker "127.0.0.1:${ports[$i]}" \
        --username "$site" --password-file "$dir/secrets/$site.pw" \
        --state-dir "$dir/$site/manager" >"$dir/$site/manager.log" 2>&1 &
    pids+=($!)
done
for i in "${!sites[@]}"; do
    wait_for 20 "manager ${sites[$i]} answering" ctl "$i" -t 1 ping
done

cat <<EOF

A federation of $n site(s) is up, in $dir
(bridges find peers that started after them within ~30 s).

  site      broker            logs
EOF
for i in "${!sites[@]}"; do
    printf '  %-9s 127.0.0.1:%-7s %s/{mosquitto,manager}.log\n' "${sites[$i]}" "${ports[$i]}" \
        "$dir/${sites[$i]}"
done
cat <<EOF

Reach a site's manager as operator, e.g.:
  $build/cfmctl -b 127.0.0.1:${ports[0]} -u operator -P $dir/secrets/operator.pw -s ${sites[0]} sites list
  $build/cfmctl -b 127.0.0.1:${ports[0]} -u operator -P $dir/secrets/operator.pw -s ${sites[0]} system load examples/web3tier.json
(any site's broker reaches any site's manager: -b picks the broker, -s the manager).
Watch as a manager would (the ACL lets operators read statuses, events and runs only):
  mosquitto_sub -p ${ports[0]} -u ${sites[0]} -P \$(cat $dir/secrets/${sites[0]}.pw) -t 'cfm/v1/#' -v
Passwords: $dir/secrets/USER.pw

Ctrl-C stops every process started here and removes $dir.
EOF

# Wait for a signal (the traps stop everything), or for one of the
# processes to die: then stop the others and keep the logs.
wait -n || true
echo "$0: a broker or manager exited; stopping the others (logs kept in $dir)" >&2
KEEP=1
exit 1
