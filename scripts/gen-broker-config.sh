#!/usr/bin/env bash
# gen-broker-config.sh - renders the site broker configuration of
# broker-config/ (mosquitto.conf, acl, bridge-to-PEER.conf.example) for real
# sites, or writes a whole federation of loopback brokers for tests and
# scripts/federation-up.sh. The files are the shipped ones with their
# placeholders replaced (and, for "local", paths and ports moved into one
# directory): what the tests run is what production runs.
#
# usage:
#   gen-broker-config.sh acl [--agent VM]... SITE...
#       the ACL of a federation of these sites (and agents), on stdout
#   gen-broker-config.sh conf SITE RELAY-PASSWORD-FILE
#       SITE's mosquitto.conf, on stdout
#   gen-broker-config.sh bridge LOCAL PEER HOST:PORT PASSWORD-FILE
#       the bridge from LOCAL's broker to PEER's, on stdout; PASSWORD-FILE
#       holds the password of user bridge-LOCAL at PEER
#   gen-broker-config.sh local DIR [--agent SITE:VM]... SITE=PORT...
#       a full mesh of brokers on 127.0.0.1, one per SITE on PORT:
#         DIR/secrets/USER.pw              a password per user (mode 0600)
#         DIR/SITE/mosquitto.conf, acl, passwd, bridges.d/to-PEER.conf
#         DIR/SITE/data/                   the broker's persistence
#       Start one with: mosquitto -c DIR/SITE/mosquitto.conf
#       Users: SITE (its manager), operator, relay, bridge-PEER for every
#       peer, agent-VM for the site's agents (--agent SITE:VM).
set -euo pipefail

CONF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../broker-config" && pwd)

die() {
    echo "gen-broker-config.sh: $*" >&2
    exit 2
}

check_id() {  # the ID rule of DESIGN.md, and the ACL's reserved names
    [[ $1 =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "'$1' is not an ID ([A-Za-z0-9_.-]{1,64})"
}

check_site() {
    check_id "$1"
    case $1 in
    operator | relay | agent-* | bridge-*) die "'$1' is reserved and cannot be a site ID" ;;
    esac
}

read_secret() {
    [ -r "$1" ] || die "cannot read password file $1"
    local pw
    pw=$(head -n 1 "$1")
    [ -n "$pw" ] || die "$1 is empty"
    [[ $pw =~ ^[A-Za-z0-9._~+=-]+$ ]] || die "$1: use a password of letters, digits and ._~+=-"
    printf '%s' "$pw"
}

# render_acl "SITE..." "VM..." : the ACL template with each #@begin/#@end
# block repeated per site (site, bridge) or per VM (agent).
render_acl() {
    local sites=$1 vms=$2
    awk -v sites="$sites" -v vms="$vms" '
        /^#@begin / { kind = $2; block = ""; next }
        /^#@end /   {
            n = split(kind == "agent" ? vms : sites, ids, " ")
            placeholder = kind == "agent" ? "@VM@" : "@SITE@"
            for (i = 1; i <= n; i++) {
                text = block
                gsub(placeholder, ids[i], text)
                printf "%s", text
            }
            kind = ""
            next
        }
        kind != "" { block = block $0 "\n"; next }
        { print }
    ' "$CONF_DIR/acl"
}

render_conf() {  # SITE PASSWORD
    sed -e "s|@SITE@|$1|g" -e "s|@RELAY_PASSWORD@|$2|g" "$CONF_DIR/mosquitto.conf"
}

render_bridge() {  # LOCAL PEER ADDRESS PASSWORD
    sed -e "s|@LOCAL@|$1|g" -e "s|@PEER@|$2|g" -e "s|@PEER_ADDRESS@|$3|g" \
        -e "s|@BRIDGE_PASSWORD@|$4|g" "$CONF_DIR/bridge-to-PEER.conf.example"
}

new_secret() {  # FILE: a random password, kept if FILE exists
    [ -s "$1" ] && return
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$1")
}

cmd_local() {
    local dir=$1
    shift
    local -a sites=() ports=() agents=()
    while [ $# -gt 0 ]; do
        case $1 in
        --agent)
            [ $# -ge 2 ] || die "--agent needs SITE:VM"
            agents+=("$2")
            shift 2
            ;;
        *=*)
            check_site "${1%%=*}"
            [[ ${1#*=} =~ ^[0-9]+$ ]] || die "'$1': the port is not a number"
            sites+=("${1%%=*}")
            ports+=("${1#*=}")
            shift
            ;;
        *) die "local: '$1' is not SITE=PORT or --agent SITE:VM" ;;
        esac
    done
    [ ${#sites[@]} -gt 0 ] || die "local: no SITE=PORT given"
    local vms="" a
    for a in "${agents[@]}"; do
        check_id "${a#*:}"
        vms+="${a#*:} "
    done

    mkdir -p "$dir/secrets"
    dir=$(cd "$dir" && pwd)
    local u
    for u in operator relay "${sites[@]}"; do new_secret "$dir/secrets/$u.pw"; done
    for u in "${sites[@]}"; do new_secret "$dir/secrets/bridge-$u.pw"; done
    for a in "${agents[@]}"; do new_secret "$dir/secrets/agent-${a#*:}.pw"; done

    local acl i j site port sd passwd
    acl=$(render_acl "${sites[*]}" "$vms")
    for i in "${!sites[@]}"; do
        site=${sites[$i]}
        port=${ports[$i]}
        sd=$dir/$site
        mkdir -p "$sd/data" "$sd/bridges.d"
        rm -f "$sd"/bridges.d/*.conf
        printf '%s\n' "$acl" >"$sd/acl"

        # Only the users that connect to this broker: its manager, operator,
        # its relay, the peers' bridges and its own agents.
        passwd=$sd/passwd
        : >"$passwd"
        chmod 600 "$passwd"
        add_user() { mosquitto_passwd -b "$passwd" "$1" "$(read_secret "$dir/secrets/$1.pw")"; }
        add_user "$site"
        add_user operator
        add_user relay
        for j in "${!sites[@]}"; do
            [ "$j" = "$i" ] && continue
            add_user "bridge-${sites[$j]}"
            render_bridge "$site" "${sites[$j]}" "127.0.0.1:${ports[$j]}" \
                "$(read_secret "$dir/secrets/bridge-$site.pw")" \
                >"$sd/bridges.d/to-${sites[$j]}.conf"
        done
        for a in "${agents[@]}"; do
            [ "${a%%:*}" = "$site" ] && add_user "agent-${a#*:}"
        done

        # The production file, moved: its paths into $sd, its port to
        # $port, and (a test broker runs as whoever starts it) the user
        # Mosquitto would otherwise switch to when started as root.
        {
            echo "# Generated by scripts/gen-broker-config.sh local from broker-config/mosquitto.conf"
            echo "user $(id -un)"
            render_conf "$site" "$(read_secret "$dir/secrets/relay.pw")" |
                sed -e "s|/var/lib/cfm/$site/mosquitto/|$sd/data/|" \
                    -e "s|/etc/cfm/$site/|$sd/|g" \
                    -e "s|/etc/cfm/$site\$|$sd|" \
                    -e "s|^listener 1883 127.0.0.1\$|listener $port 127.0.0.1|" \
                    -e "s|^address 127.0.0.1:1883\$|address 127.0.0.1:$port|"
        } >"$sd/mosquitto.conf"
        chmod 600 "$sd/mosquitto.conf"
        grep -q "^listener $port 127.0.0.1\$" "$sd/mosquitto.conf" &&
            grep -q "^address 127.0.0.1:$port\$" "$sd/mosquitto.conf" &&
            ! grep -q '@[A-Z_]*@' "$sd/mosquitto.conf" ||
            die "broker-config/mosquitto.conf changed shape: cannot move it into $sd"
    done
}

[ $# -ge 1 ] || die "usage: see the head of $0"
cmd=$1
shift
case $cmd in
acl)
    acl_vms=""
    acl_sites=""
    while [ $# -gt 0 ]; do
        if [ "$1" = --agent ]; then
            [ $# -ge 2 ] || die "--agent needs a VM"
            check_id "$2"
            acl_vms+="$2 "
            shift 2
        else
            check_site "$1"
            acl_sites+="$1 "
            shift
        fi
    done
    [ -n "$acl_sites" ] || die "acl: no SITE given"
    render_acl "$acl_sites" "$acl_vms"
    ;;
conf)
    [ $# -eq 2 ] || die "usage: conf SITE RELAY-PASSWORD-FILE"
    check_site "$1"
    render_conf "$1" "$(read_secret "$2")"
    ;;
bridge)
    [ $# -eq 4 ] || die "usage: bridge LOCAL PEER HOST:PORT PASSWORD-FILE"
    check_site "$1"
    check_site "$2"
    render_bridge "$1" "$2" "$3" "$(read_secret "$4")"
    ;;
local)
    [ $# -ge 2 ] || die "usage: local DIR [--agent SITE:VM]... SITE=PORT..."
    cmd_local "$@"
    ;;
*) die "unknown command '$cmd' (acl, conf, bridge, local)" ;;
esac
