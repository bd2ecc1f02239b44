#!/usr/bin/env bash
# cfm-svc, the services of the example web 3-tier system, as real processes
# on loopback ports driven with curl: web (greeting, health), lb (round-robin
# with X-Backend, a killed backend skipped, a backend added to the file
# picked up, 503 with none), db (PUT/GET, data kept across a restart),
# web -> db through the lb, --watch (a service outlives nothing it watches),
# SIGTERM, --pidfile, bounds (oversized head and body, malformed and slow
# requests) and a bad command line.
source "$(dirname "$0")/lib.sh"

SVC=$CFM_BUILD/cfm-svc
[ -x "$SVC" ] || fail "$SVC is not built"

declare -A USED_PORTS=()
new_port() {      # new_port VAR: a free port no other service of this test was given
    local p
    p=$(free_port)
    while [ -n "${USED_PORTS[$p]:-}" ]; do p=$(free_port); done
    USED_PORTS[$p]=1
    printf -v "$1" %s "$p"
}

sleep 1000 &      # the "VM agent" every service watches
PIDS[owner]=$!
OWNER=${PIDS[owner]}

# start_svc NAME PORT MODE ARGS...: cfm-svc MODE on 127.0.0.1:PORT, logging
# to $TMP/NAME.log; waits until it listens.
start_svc() {
    local name=$1 port=$2 mode=$3
    shift 3
    "$SVC" "$mode" --listen "127.0.0.1:$port" --watch "$OWNER" "$@" >>"$TMP/$name.log" 2>&1 &
    PIDS[$name]=$!
    wait_until 10 "$name listening on $port" port_open "$port"
}

kill_svc() {      # SIGKILL, reaped
    kill -KILL "${PIDS[$1]}" 2>/dev/null
    wait "${PIDS[$1]}" 2>/dev/null
    unset "PIDS[$1]"
}

url() { echo "http://127.0.0.1:$1$2"; }
body() { curl -s --max-time 5 "$(url "$1" "$2")"; }
code() {          # code PORT PATH [CURL-ARGS...]: the status of the answer
    local port=$1 path=$2
    shift 2
    curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@" "$(url "$port" "$path")"
}
backend() {       # backend PORT [PATH]: the X-Backend of the lb's answer
    curl -s --max-time 5 -D - -o /dev/null "$(url "$1" "${2:-/}")" | tr -d '\r' |
        sed -n 's/^X-Backend: //p'
}
put() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X PUT --data-binary "$3" "$(url "$1" "$2")"; }
gone() {          # the process is gone (or a zombie not yet reaped)
    ! kill -0 "$1" 2>/dev/null || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ]
}
has() { body "$1" "$2" | grep -q -- "$3"; }
status_is() { [ "$(code "$1" "$2")" = "$3" ]; }
lists_none() { [ "$(code "$1" /lb/backends)" = 200 ] && [ -z "$(body "$1" /lb/backends)" ]; }
# raw PORT TEXT: sends TEXT (printf %b) and prints the answer's status line.
raw() {
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf '%b' "$2" >&3
    timeout 10 head -n 1 <&3 | tr -d '\r'
    exec 3>&-
}
set_backends() {  # set_backends LINE...: rewrites the lb's file atomically
    printf '%s\n' "# written by test_services" "$@" >"$BACKENDS.tmp"
    mv "$BACKENDS.tmp" "$BACKENDS"
}

for var in P_DB P_W1 P_W2 P_W3 P_LB P_WW P_WP; do new_port "$var"; done
DATA=$TMP/vm-db/volumes/db-data
BACKENDS=$TMP/vm-lb/etc/cfm-lb/backends.conf
mkdir -p "$(dirname "$BACKENDS")"

step "command line"
rc=0
"$SVC" web --listen 127.0.0.1:1 --watch "$OWNER" 2>"$TMP/usage.err" || rc=$?
assert_eq 2 "$rc" "exit status of web without --name"
assert_contains "$(cat "$TMP/usage.err")" "--name" "the message of web without --name"
rc=0
"$SVC" lb --listen 127.0.0.1:99999 --backends x --watch "$OWNER" 2>"$TMP/usage.err" || rc=$?
assert_eq 2 "$rc" "exit status for a bad port"
rc=0
"$SVC" db --listen 127.0.0.1:1 --data "$TMP/x" 2>"$TMP/usage.err" || rc=$?
assert_eq 2 "$rc" "exit status without --watch"
rc=0
"$SVC" cache --listen 127.0.0.1:1 --watch "$OWNER" 2>"$TMP/usage.err" || rc=$?
assert_eq 2 "$rc" "exit status for an unknown mode"

step "db: PUT and GET"
start_svc db "$P_DB" db --data "$DATA" --name db-1 --pidfile "$TMP/db.pid"
wait_until 5 "db pidfile" test -s "$TMP/db.pid"
assert_eq "${PIDS[db]}" "$(cat "$TMP/db.pid")" "db pidfile"
assert_eq "ok" "$(body "$P_DB" /health)" "db health"
assert_eq 404 "$(code "$P_DB" /kv/k1)" "GET of an absent key"
assert_eq 201 "$(put "$P_DB" /kv/k1 first)" "PUT of a new key"
assert_eq first "$(body "$P_DB" /kv/k1)" "GET after PUT"
assert_eq 200 "$(put "$P_DB" /kv/k1 second)" "PUT over a key"
assert_eq second "$(body "$P_DB" /kv/k1)" "GET after the second PUT"
assert_eq 400 "$(put "$P_DB" /kv/.hidden x)" "a key starting with '.'"
assert_eq 400 "$(put "$P_DB" /kv/a%2Fb x)" "a key with '%'"
assert_eq 400 "$(code "$P_DB" "/kv/$(printf 'k%.0s' $(seq 65))")" "a key of 65 characters"
assert_eq 405 "$(code "$P_DB" /kv/k1 -X DELETE)" "DELETE"
assert_eq 404 "$(code "$P_DB" /nothing)" "an unknown path"
assert_eq second "$(cat "$DATA/k1")" "the value on disk"
assert_eq "k1" "$(ls -A "$DATA")" "files in the data directory (no temporary left)"

step "db: data kept across a restart (SIGTERM exits 0, removes the pidfile)"
kill -TERM "${PIDS[db]}"
rc=0
wait "${PIDS[db]}" || rc=$?
unset "PIDS[db]"
assert_eq 0 "$rc" "db exit status after SIGTERM"
[ ! -e "$TMP/db.pid" ] || fail "the pidfile is left after SIGTERM"
: >"$DATA/.tmp.1.2"   # as an interrupted write leaves it
start_svc db "$P_DB" db --data "$DATA" --name db-1
assert_eq second "$(body "$P_DB" /kv/k1)" "GET after the restart"
[ ! -e "$DATA/.tmp.1.2" ] || fail "the leftover temporary file is still there"

step "web: name, health, and /kv through the db"
start_svc web-1 "$P_W1" web --name web-1 --db "127.0.0.1:$P_DB"
start_svc web-2 "$P_W2" web --name web-2 --db "127.0.0.1:$P_DB"
assert_eq "hello from web-1" "$(body "$P_W1" /)" "web-1's greeting"
assert_eq "hello from web-2" "$(body "$P_W2" /)" "web-2's greeting"
assert_eq ok "$(body "$P_W1" /health)" "web-1 health"
assert_eq second "$(body "$P_W1" /kv/k1)" "GET /kv through web-1"
assert_eq 404 "$(code "$P_W1" /nothing)" "web: an unknown path"
assert_eq 405 "$(code "$P_W1" / -X POST -d x)" "web: POST /"

step "lb: round-robin with X-Backend"
set_backends "server web-1 127.0.0.1:$P_W1" "" "server web-2 127.0.0.1:$P_W2"
start_svc lb "$P_LB" lb --backends "$BACKENDS" --name lb-1 --listen "127.0.0.2:$P_LB"
assert_eq "server web-1 127.0.0.1:$P_W1
server web-2 127.0.0.1:$P_W2" "$(body "$P_LB" /lb/backends)" "the lb's backends"
first=$(backend "$P_LB")
for i in 1 2 3 4 5; do
    next=$(backend "$P_LB")
    [ -n "$next" ] && [ "$next" != "$first" ] || fail "X-Backend did not alternate: '$first' then '$next'"
    first=$next
done
greetings=$(for i in 1 2 3 4; do body "$P_LB" /; done | sort -u | tr '\n' ,)
assert_eq "hello from web-1,hello from web-2," "$greetings" "greetings through the lb"
assert_contains "$(curl -s --max-time 5 "http://127.0.0.2:$P_LB/")" "hello from web-" \
    "the lb's second --listen address (as on a public address)"

step "web -> db through the lb"
assert_eq 201 "$(put "$P_LB" /kv/x "written before DR")" "PUT /kv/x through the lb"
assert_eq "written before DR" "$(body "$P_LB" /kv/x)" "GET /kv/x through the lb"
assert_eq "written before DR" "$(body "$P_LB" /kv/x)" "GET /kv/x through the other web"
head -c 1048576 /dev/urandom >"$TMP/value.bin"
assert_eq 201 "$(put "$P_LB" /kv/big "@$TMP/value.bin")" "PUT of a 1 MiB value through the lb"
curl -s --max-time 5 "$(url "$P_LB" /kv/big)" -o "$TMP/value.out"
cmp -s "$TMP/value.bin" "$TMP/value.out" || fail "the 1 MiB value came back different"
codes=$(seq 40 | xargs -P 20 -I{} curl -s --max-time 5 -o /dev/null -w '%{http_code}\n' \
    "$(url "$P_LB" /kv/x)" | sort | uniq -c | tr -s ' ')
assert_eq " 40 200" "$codes" "40 requests, 20 at a time"

step "lb: a killed web is skipped"
kill_svc web-1
for i in 1 2 3 4 5 6; do
    assert_eq 200 "$(code "$P_LB" /)" "request $i with web-1 dead"
    assert_eq web-2 "$(backend "$P_LB")" "backend of request $i with web-1 dead"
done

step "lb: a backend added to the file is picked up"
start_svc web-3 "$P_W3" web --name web-3 --db "127.0.0.1:$P_DB"
set_backends "server web-1 127.0.0.1:$P_W1" "server web-2 127.0.0.1:$P_W2" \
    "server web-3 127.0.0.1:$P_W3"
wait_until 5 "lb lists web-3" has "$P_LB" /lb/backends web-3
seen=$(for i in 1 2 3 4 5 6; do backend "$P_LB"; done | sort -u | tr '\n' ,)
assert_eq "web-2,web-3," "$seen" "backends answering with web-1 dead"
assert_eq "written before DR" "$(body "$P_LB" /kv/x)" "GET /kv/x with web-3"

step "lb: 503 without backends"
set_backends "server web-1 127.0.0.1:$P_W1"
wait_until 5 "lb drops web-2 and web-3" status_is "$P_LB" / 503
assert_contains "$(body "$P_LB" /)" "no backend answered" "503 with only a dead backend"
set_backends "# none"
wait_until 5 "lb has no backends" lists_none "$P_LB"
assert_eq 503 "$(code "$P_LB" /)" "status with no backends"
assert_contains "$(body "$P_LB" /)" "lists none" "body with no backends"
rm -f "$BACKENDS"
assert_eq 503 "$(code "$P_LB" /)" "status with no backends file"
set_backends "server web-2 127.0.0.1:$P_W2"
assert_eq "hello from web-2" "$(body "$P_LB" /)" "greeting once a backend is back"

step "web: 502 when the db is unreachable"
kill_svc db
assert_eq 502 "$(code "$P_W2" /kv/x)" "GET /kv/x with the db dead"
assert_eq 502 "$(put "$P_LB" /kv/y v)" "PUT /kv/y through the lb with the db dead"
assert_eq "hello from web-2" "$(body "$P_LB" /)" "the greeting needs no db"
start_svc db "$P_DB" db --data "$DATA"
assert_eq "written before DR" "$(body "$P_LB" /kv/x)" "GET /kv/x with the db back"

step "bounds: oversized, malformed and slow requests"
big_header=$(head -c 20000 /dev/zero | tr '\0' a)
assert_eq 413 "$(code "$P_W2" /health -H "X-Big: $big_header")" "a 20 KB header"
head -c 1048577 /dev/zero >"$TMP/too-big.bin"
assert_eq 413 "$(put "$P_DB" /kv/too-big "@$TMP/too-big.bin")" "a body over 1 MiB to the db"
assert_eq 413 "$(put "$P_LB" /kv/too-big "@$TMP/too-big.bin")" "a body over 1 MiB to the lb"
[ ! -e "$DATA/too-big" ] || fail "the oversized value was stored"
assert_eq "HTTP/1.1 400 Bad Request" "$(raw "$P_DB" 'NONSENSE\r\n\r\n')" "a malformed request line"
assert_eq "HTTP/1.1 400 Bad Request" "$(raw "$P_DB" 'GET /health HTTP/1.1\r\nno colon\r\n\r\n')" \
    "a header without a colon"
assert_eq "HTTP/1.1 501 Not Implemented" \
    "$(raw "$P_DB" 'PUT /kv/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n')" "a chunked body"
assert_eq "HTTP/1.1 200 OK" "$(raw "$P_DB" 'GET /health HTTP/1.0\n\n')" "bare LF line ends"
assert_eq "HTTP/1.1 408 Request Timeout" "$(raw "$P_DB" 'GET /health HTTP/1.1\r\nHost: x\r\n')" \
    "a head that never ends"
assert_eq ok "$(body "$P_DB" /health)" "db still serving"
assert_eq ok "$(body "$P_W2" /health)" "web still serving"
assert_eq "hello from web-2" "$(body "$P_LB" /)" "lb still serving"

step "--watch: a service exits when the watched process is gone"
sleep 1000 &
PIDS[owner2]=$!
"$SVC" web --listen "127.0.0.1:$P_WW" --name web-w --watch "${PIDS[owner2]}" \
    --pidfile "$TMP/web-w.pid" >>"$TMP/web-w.log" 2>&1 &
PIDS[web-w]=$!
wait_until 10 "web-w pidfile" test -s "$TMP/web-w.pid"
kill -KILL "${PIDS[owner2]}"
wait "${PIDS[owner2]}" 2>/dev/null
unset "PIDS[owner2]"
wait_until 5 "web-w exits after its watched process" gone "${PIDS[web-w]}"
rc=0
wait "${PIDS[web-w]}" || rc=$?
unset "PIDS[web-w]"
assert_eq 0 "$rc" "exit status of web-w"
[ ! -e "$TMP/web-w.pid" ] || fail "web-w left its pidfile"
assert_contains "$(cat "$TMP/web-w.log")" "the watched process is gone" "web-w's last words"
rc=0
"$SVC" web --listen 127.0.0.1:1 --name w --watch "$OWNER" --watch 999999999 2>"$TMP/usage.err" ||
    rc=$?
assert_eq 2 "$rc" "exit status when the watched process does not exist"

step "--watch parent: a service follows the process that started it"
# The parent starts the service and becomes a sleep (exec keeps its pid):
# as an agent that started a service detached.
bash -c '"$1" web --listen "127.0.0.1:$2" --name web-p --watch parent --pidfile "$3" \
    >>"$4" 2>&1 & exec sleep 1000' _ "$SVC" "$P_WP" "$TMP/web-p.pid" "$TMP/web-p.log" &
PIDS[parent]=$!
wait_until 10 "web-p pidfile" test -s "$TMP/web-p.pid"
web_p=$(cat "$TMP/web-p.pid")
assert_eq ok "$(body "$P_WP" /health)" "web-p serving"
kill -KILL "${PIDS[parent]}"
wait "${PIDS[parent]}" 2>/dev/null
unset "PIDS[parent]"
wait_until 5 "web-p exits after its parent" gone "$web_p"
assert_contains "$(cat "$TMP/web-p.log")" "the watched process is gone (pid" "web-p's last words"

step "--watch: every service of the owner exits with it"
kill -KILL "$OWNER"
wait "$OWNER" 2>/dev/null
unset "PIDS[owner]"
for name in db web-2 web-3 lb; do
    wait_until 5 "$name exits after the owner" gone "${PIDS[$name]}"
    unset "PIDS[$name]"
done
grep -q "GET /kv/x 200 backend=web-" "$TMP/lb.log" || fail "the lb logs no request line"

pass
