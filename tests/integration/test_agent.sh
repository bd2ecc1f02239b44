#!/usr/bin/env bash
# cfm-agent on a real broker, driven with mosquitto_rr/pub/sub as a manager
# would drive it: status and load, ping, exec (argv, shell, cwd, env, stdin,
# timeout killing the whole process group, output cap, concurrency, detach),
# put_file/get_file and their confinement, http_get against real HTTP
# servers (an answer, a 404, a refused port, a server that never answers,
# malformed requests), idempotent ids (also while running and across
# restarts), the Last Will on kill -9, a crash during a command, and a clean
# SIGTERM.
source "$(dirname "$0")/lib.sh"

LONG=4321   # seconds a command would run if nothing stopped it
# The VM's id is this run's own: a stopping agent signals every process
# carrying CFM_VM=<its id> on the machine, so another run of this test at
# the same time must not share it.
VM=vm1-$$
start_broker a
PORT=${BROKER_PORT[a]}
ROOT=$TMP/vm1
OUTSIDE=$TMP/outside
mkdir -p "$ROOT" "$OUTSIDE"
ROOT_REAL=$(cd "$ROOT" && pwd -P)
STATUS_TOPIC=cfm/v1/agent/$VM/status
KILL_GROUPS=()    # process groups a test left running on purpose

cleanup_groups() {
    local p
    for g in "${KILL_GROUPS[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
    KILL_GROUPS=()
    # Whatever this run's commands left running (a run cut short leaves its
    # services): every process whose environment names this run's VM.
    for p in /proc/[0-9]*; do
        tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "CFM_VM=$VM" && kill -KILL "${p#/proc/}" 2>/dev/null
    done
}
trap 'rc=$?; cleanup_groups; (exit "$rc"); cleanup' EXIT

status() { retained a "$STATUS_TOPIC"; }
status_has() { status | grep -q -- "$1"; }

online_or_dead() {  # the agent with pid $1 is online, or has died
    ! kill -0 "$1" 2>/dev/null || status_has "\"state\":\"online\",\"vm\":\"$VM\",\"pid\":$1,"
}

start_agent() {    # start_agent [FLAG...]
    "$CFM_BUILD/cfm-agent" --vm "$VM" --broker "127.0.0.1:$PORT" --root "$ROOT" \
        --status-interval 1 --log-level debug "$@" >>"$TMP/agent-vm1.log" 2>&1 &
    PIDS[agent-vm1]=$!
    wait_until 15 "agent vm1 online" online_or_dead "${PIDS[agent-vm1]}"
    kill -0 "${PIDS[agent-vm1]}" 2>/dev/null || fail "the agent died at start-up"
}

stop_agent() {    # SIGTERM; fails unless the agent exits 0 and says it is offline
    local code=0
    kill -TERM "${PIDS[agent-vm1]}"
    wait "${PIDS[agent-vm1]}" || code=$?
    unset "PIDS[agent-vm1]"
    assert_eq 0 "$code" "exit status after SIGTERM"
    assert_eq "{\"state\":\"offline\",\"vm\":\"$VM\"}" "$(status)" "status after SIGTERM"
}

# req ID JSON: sends a request and prints its answer.
req() {
    mosquitto_rr -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/req" -e "cfm/v1/agent/$VM/res/$1" \
        -m "$2" -W 20
}

send() {          # send JSON: a request without waiting for its answer
    mosquitto_pub -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/req" -m "$1"
}

listen() {        # listen ID: records the answers to ID; returns once subscribed
    # Line-buffered: the -d lines say when the subscription is in place.
    stdbuf -oL mosquitto_sub -d -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/res/$1" >"$TMP/sub-$1.out" &
    PIDS[sub-$1]=$!
    wait_until 5 "subscriber for $1" grep -q '^Subscribed' "$TMP/sub-$1.out"
}

answers() {       # answers ID: what the listener of ID received (-d lines dropped)
    grep '^{' "$TMP/sub-$1.out"
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

group_alive() {   # true while a live (not zombie) process is in process group $1
    local p state
    for p in $(pgrep -g "$1"); do
        state=$(sed -e 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
        [ -n "$state" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

group_gone() { ! group_alive "$1"; }

step "configuration errors: exit 2 and one line naming the flag"
for args in "--vm a/b --broker 127.0.0.1:1 --root $ROOT" "--vm v --broker 127.0.0.1:0 --root $ROOT" \
            "--vm v --broker 127.0.0.1:1 --root $TMP/nope" "--vm v --broker 127.0.0.1:1"; do
    rc=0
    err=$("$CFM_BUILD/cfm-agent" $args 2>&1 >/dev/null) || rc=$?
    assert_eq 2 "$rc" "exit status of cfm-agent $args"
    assert_eq 1 "$(printf '%s\n' "$err" | wc -l)" "lines of the error of $args"
    assert_contains "$err" "cfm-agent: --" "error of $args"
done

step "online, retained, with load figures, refreshed every interval"
start_agent
first=$(status)
for f in '"load1":' '"load5":' '"load15":' '"mem_total_kb":' '"mem_available_kb":' \
         '"procs":' '"running_commands":0' '"time":'; do
    assert_contains "$first" "$f" "status"
done
first_time=$(printf '%s' "$first" | grep -o '"time":"[^"]*"')
status_refreshed() { status | grep -q '"time":' && ! status | grep -qF "$first_time"; }
wait_until 10 "a fresh status" status_refreshed

step "ping"
out=$(req p1 '{"id":"p1","op":"ping"}') || fail "ping: $out"
assert_contains "$out" "{\"id\":\"p1\",\"ok\":true,\"vm\":\"$VM\",\"time\":\"" "ping"
assert_contains "$out" "\"pid\":${PIDS[agent-vm1]}}" "ping pid"

step "exec: argv and shell, stdout, stderr, exit code"
out=$(req e1 '{"id":"e1","op":"exec","argv":["sh","-c","echo out; echo err >&2; exit 3"]}')
assert_contains "$out" '"ok":true,"code":3,"signal":null,"stdout":"out\n","stderr":"err\n"' "argv"
assert_contains "$out" '"timed_out":false' "argv"
out=$(req e2 '{"id":"e2","op":"exec","shell":"echo $((6*7)); exit 0"}')
assert_contains "$out" '"code":0,"signal":null,"stdout":"42\n","stderr":""' "shell"
out=$(req e3 '{"id":"e3","op":"exec","argv":["no-such-program"]}')
assert_contains "$out" '"ok":false,"error":"cannot run '"'no-such-program'"': no such file or directory"' "missing program"

step "exec: cwd, env and stdin"
mkdir -p "$ROOT/work"
out=$(req e4 '{"id":"e4","op":"exec","shell":"pwd; echo $GREETING $CFM_VM $HOME; cat","cwd":"/work","env":{"GREETING":"hello"},"stdin":"from stdin"}')
assert_contains "$out" "\"stdout\":\"$ROOT_REAL/work\\nhello $VM $ROOT_REAL\\nfrom stdin\"" "cwd and env"
out=$(req e5 '{"id":"e5","op":"exec","shell":"true","cwd":"../.."}')
assert_contains "$out" "escapes the VM's disk" "cwd outside"

step "exec: what a command inherits: its own session, stdio only, default signals, the request's PATH"
out=$(req i1 '{"id":"i1","op":"exec","shell":"awk \"{ print \\$6 }\" /proc/$$/stat; echo $$"}')
sid_pid=$(grep -o '"stdout":"[0-9]*\\n[0-9]*\\n"' <<<"$out" | grep -o '[0-9][0-9]*')
[ -n "$sid_pid" ] && [ "$(sort -u <<<"$sid_pid" | wc -l)" -eq 1 ] ||
    fail "the command is not the leader of its own session: $out"
# ls lists its own descriptors: 0-2 and the one it reads the directory with;
# the agent's broker socket and pipes are not among them.
out=$(req i2 '{"id":"i2","op":"exec","argv":["ls","/proc/self/fd"]}')
assert_contains "$out" '"stdout":"0\n1\n2\n3\n"' "descriptors a command gets"
# The agent ignores SIGPIPE; yes must not: it dies of it, silently, when
# head has what it wants.
out=$(req i3 '{"id":"i3","op":"exec","shell":"yes | head -c 2"}')
assert_contains "$out" '"code":0,"signal":null,"stdout":"y\n","stderr":""' "SIGPIPE restored for commands"
out=$(req i4 '{"id":"i4","op":"put_file","path":"/opt/app/bin/hello","content":"#!/bin/sh\necho hello from $0\n","mode":"0755"}')
assert_contains "$out" '"ok":true' "put_file of a program"
out=$(req i5 "{\"id\":\"i5\",\"op\":\"exec\",\"argv\":[\"hello\"],\"env\":{\"PATH\":\"/nowhere:$ROOT_REAL/opt/app/bin\"}}")
assert_contains "$out" "\"stdout\":\"hello from $ROOT_REAL/opt/app/bin/hello\\n\"" "a program found on the request's PATH"
out=$(req i6 '{"id":"i6","op":"exec","argv":["hello"]}')
assert_contains "$out" "\"error\":\"cannot run 'hello': no such file or directory\"" "a program not on the default PATH"

step "exec: a timeout kills the whole process group"
out=$(req e6 "{\"id\":\"e6\",\"op\":\"exec\",\"shell\":\"echo \$\$ > pgid; sleep $LONG & sleep $LONG\",\"timeout_s\":1}")
assert_contains "$out" '"code":null,"signal":9' "timed out command"
assert_contains "$out" '"timed_out":true' "timed out command"
pgid=$(cat "$ROOT/pgid")
[ -n "$pgid" ] || fail "the command did not write its process group"
wait_until 5 "no process of group $pgid left" group_gone "$pgid"

step "exec: output over the cap is cut, the rest drained"
out=$(req e7 '{"id":"e7","op":"exec","shell":"yes | head -c 3000000; yes e | head -c 6 >&2","max_output":10}')
assert_contains "$out" '"stdout":"y\ny\ny\ny\ny\n","stderr":"e\ne\ne\n","stdout_truncated":true,"stderr_truncated":false' "capped output"
out=$(req e8 '{"id":"e8","op":"exec","shell":"head -c 2000000 /dev/zero | tr \"\\0\" Q"}')
assert_eq 1048576 "$(printf '%s' "$out" | tr -cd Q | wc -c)" "bytes kept by the default cap"
assert_contains "$out" '"stdout_truncated":true' "default cap"
out=$(req e9 '{"id":"e9","op":"exec","shell":"printf \"ok\\377\\n\""}')
assert_contains "$out" '"stdout":"ok'$'\xef\xbf\xbd''\n"' "invalid UTF-8 replaced"

step "a ping is answered while a long command runs"
listen long
send "{\"id\":\"long\",\"op\":\"exec\",\"shell\":\"sleep $LONG\",\"timeout_s\":5}"
wait_until 10 "status counting the running command" status_has '"running_commands":1'
out=$(mosquitto_rr -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/req" -e "cfm/v1/agent/$VM/res/p2" \
      -m '{"id":"p2","op":"ping"}' -W 2) || fail "no ping answer while a command runs: $out"
assert_contains "$out" '"ok":true' "ping while running"
assert_eq "" "$(answers long)" "the long command's answer before its end"
long_answered() { answers long | grep -q '"timed_out":true'; }
wait_until 15 "the long command's answer" long_answered

step "exec: as many commands as the agent runs at once, each answered when it ends, none left unreaped"
stdbuf -oL mosquitto_sub -d -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/res/+" >"$TMP/sub-many.out" &
PIDS[sub-many]=$!
wait_until 5 "subscriber for the many" grep -q '^Subscribed' "$TMP/sub-many.out"
for i in $(seq 64); do
    send "{\"id\":\"m$i\",\"op\":\"exec\",\"shell\":\"sleep 0.$((i % 4)); echo $i\"}"
done
many_answered() { [ "$(grep -c '^{"id":"m[0-9]*","ok":true,"code":0' "$TMP/sub-many.out")" -eq 64 ]; }
wait_until 30 "64 commands answered" many_answered
for i in $(seq 64); do
    grep -q "^{\"id\":\"m$i\",\"ok\":true,\"code\":0,\"signal\":null,\"stdout\":\"$i\\\\n\"" \
        "$TMP/sub-many.out" || fail "command m$i: $(grep "\"m$i\"" "$TMP/sub-many.out")"
done
zombies=$(ps -o stat= --ppid "${PIDS[agent-vm1]}" | grep -c '^Z' || true)
assert_eq 0 "$zombies" "the agent's children left unreaped"

step "exec with detach: answered once it runs, output appended to its log, reaped when it ends"
out=$(req d1 "{\"id\":\"d1\",\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo started; echo oops >&2; exec sleep $LONG\"],\"detach\":true,\"log\":\"logs/d1.log\"}")
assert_contains "$out" '{"id":"d1","ok":true,"code":0,' "a detached command's answer"
assert_contains "$out" '"detached":true' "a detached command's answer"
pid=$(printf '%s' "$out" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || fail "the detached command is not running after its answer: $out"
KILL_GROUPS+=("$pid")
assert_eq "${PIDS[agent-vm1]}" "$(ps -o ppid= -p "$pid" | tr -d ' ')" "a detached command's parent"
log_has() { grep -qx "$1" "$ROOT/logs/d1.log" 2>/dev/null; }
wait_until 5 "its stdout in its log" log_has started
wait_until 5 "its stderr in its log" log_has oops
wait_until 5 "status not counting it as running" status_has '"running_commands":0'
out=$(req d2 '{"id":"d2","op":"exec","shell":"echo again","detach":true,"log":"logs/d1.log"}')
assert_contains "$out" '"ok":true,"code":0' "a detached command that ends at once"
wait_until 5 "a second command's output appended" log_has again
log_has started || fail "the log was not appended to: $(cat "$ROOT/logs/d1.log")"
kill "$pid"
reaped() { [ ! -e "/proc/$pid" ]; } # a zombie still has its /proc entry
wait_until 5 "the detached command reaped once it ended" reaped
out=$(req d3 '{"id":"d3","op":"exec","shell":"true","detach":true,"timeout_s":5}')
assert_eq '{"id":"d3","ok":false,"error":"timeout_s does not go with \"detach\": true (a detached command runs on after its answer)"}' "$out" "detach with a timeout"
out=$(req d4 '{"id":"d4","op":"exec","shell":"true","log":"x.log"}')
assert_eq '{"id":"d4","ok":false,"error":"log goes with \"detach\": true (a command waited for answers with its output)"}' "$out" "log without detach"
out=$(req d5 '{"id":"d5","op":"exec","shell":"true","detach":true,"log":"../x.log"}')
assert_eq "{\"id\":\"d5\",\"ok\":false,\"error\":\"log: path '../x.log' escapes the VM's disk ('..' is not allowed)\"}" "$out" "a log outside the disk"
out=$(req d6 '{"id":"d6","op":"exec","shell":"true","detach":"yes"}')
assert_eq '{"id":"d6","ok":false,"error":"detach must be true or false"}' "$out" "detach not a boolean"
out=$(req d7 '{"id":"d7","op":"exec","argv":["no-such-program"],"detach":true}')
assert_eq "{\"id\":\"d7\",\"ok\":false,\"error\":\"cannot run 'no-such-program': no such file or directory\"}" "$out" "a detached program that cannot start"

step "put_file then get_file: atomic, mode applied, on disk under the root"
out=$(req f1 '{"id":"f1","op":"put_file","path":"/etc/app/app.conf","content":"a=1\nb=2\n","mode":"0640"}')
assert_eq '{"id":"f1","ok":true,"path":"/etc/app/app.conf","size":8}' "$out" "put_file"
[ -f "$ROOT/etc/app/app.conf" ] || fail "put_file did not write under the root"
assert_eq 640 "$(stat -c %a "$ROOT/etc/app/app.conf")" "mode on disk"
assert_eq "$(printf 'a=1\nb=2\n' | od -c)" "$(od -c <"$ROOT/etc/app/app.conf")" "content on disk"
assert_eq "app.conf" "$(ls -A "$ROOT/etc/app")" "files beside the target (temporary left?)"
out=$(req f2 '{"id":"f2","op":"get_file","path":"etc/app/app.conf"}')
assert_eq '{"id":"f2","ok":true,"path":"etc/app/app.conf","size":8,"mode":"0640","content":"a=1\nb=2\n"}' "$out" "get_file"
out=$(req f3 '{"id":"f3","op":"put_file","path":"bin/tool","content_b64":"AP8K","mode":"0755"}')
assert_contains "$out" '"ok":true' "put_file base64"
assert_eq "$(printf '\0\377\n' | od -c)" "$(od -c <"$ROOT/bin/tool")" "binary content"
out=$(req f4 '{"id":"f4","op":"get_file","path":"bin/tool"}')
assert_contains "$out" '"mode":"0755","content_b64":"AP8K"' "get_file base64"

step "confinement: '..', absolute paths and symbolic links stay inside"
out=$(req c1 '{"id":"c1","op":"put_file","path":"../outside/x","content":"x"}')
assert_eq "{\"id\":\"c1\",\"ok\":false,\"error\":\"path '../outside/x' escapes the VM's disk ('..' is not allowed)\"}" "$out" "put_file .."
out=$(req c2 '{"id":"c2","op":"put_file","path":"/../../outside/x","content":"x"}')
assert_contains "$out" "escapes the VM's disk" "absolute path with .."
out=$(req c3 "{\"id\":\"c3\",\"op\":\"put_file\",\"path\":\"$OUTSIDE/y\",\"content\":\"y\"}")
assert_contains "$out" '"ok":true' "an absolute path is taken inside the root"
[ -f "$ROOT$OUTSIDE/y" ] || fail "absolute path not written under the root"
ln -s "$OUTSIDE" "$ROOT/escape"
echo secret >"$OUTSIDE/secret"
out=$(req c4 '{"id":"c4","op":"put_file","path":"escape/x","content":"x"}')
assert_eq "{\"id\":\"c4\",\"ok\":false,\"error\":\"path 'escape/x' escapes the VM's disk\"}" "$out" "symlink escape"
out=$(req c5 '{"id":"c5","op":"get_file","path":"escape/secret"}')
assert_contains "$out" "escapes the VM's disk" "get_file through a symlink"
assert_eq "secret" "$(ls "$OUTSIDE")" "files outside the root"
out=$(req c6 '{"id":"c6","op":"put_file","path":".cfm-agent/answers/p1.json","content":"{}"}')
assert_contains "$out" "is the agent's own state" "the agent's state"

step "too big: a file to get, a request to parse"
head -c 2097152 /dev/zero >"$ROOT/big.bin"
out=$(req b1 '{"id":"b1","op":"get_file","path":"big.bin"}')
assert_contains "$out" "\"error\":\"path 'big.bin' is 2097152 bytes, over the 1048576-byte limit\"" "get_file too big"
{ printf '{"id":"b2","op":"put_file","path":"x","content":"'; head -c 1100000 /dev/zero | tr '\0' x; printf '"}'; } >"$TMP/big.json"
listen b2
mosquitto_pub -p "$PORT" -q 1 -t "cfm/v1/agent/$VM/req" -f "$TMP/big.json"
wait_until 10 "answer to the oversized request" answers b2
assert_eq "{\"id\":\"b2\",\"ok\":false,\"error\":\"the request of $(stat -c %s "$TMP/big.json") bytes is over the 1048576-byte limit\"}" \
    "$(answers b2)" "oversized request"
[ ! -e "$ROOT/x" ] || fail "the oversized put_file was written"

step "http_get: a real service's answer, made by the agent itself"
SVC_PORT=$(free_port)
"$CFM_BUILD/cfm-svc" web --listen "127.0.0.1:$SVC_PORT" --name web-1 --watch $$ \
    >>"$TMP/svc.log" 2>&1 &
PIDS[svc]=$!
wait_until 10 "cfm-svc listening on $SVC_PORT" port_open "$SVC_PORT"
SVC=http://127.0.0.1:$SVC_PORT
out=$(req h1 "{\"id\":\"h1\",\"op\":\"http_get\",\"url\":\"$SVC/health?instance=web-1\"}")
assert_contains "$out" '{"id":"h1","ok":true,"status":200,"body":"ok\n","body_truncated":false,"duration_ms":' "http_get 200"
grep -q "GET /health?instance=web-1 200" "$TMP/svc.log" || fail "the service did not log the GET: $(cat "$TMP/svc.log")"
out=$(req h2 "{\"id\":\"h2\",\"op\":\"http_get\",\"url\":\"$SVC/nowhere\"}")
assert_contains "$out" '"ok":true,"status":404,"body":"no such page\n"' "http_get 404"
out=$(req h3 "{\"id\":\"h3\",\"op\":\"http_get\",\"url\":\"http://localhost:$SVC_PORT/health?instance=web-2\",\"max_body\":7}")
assert_contains "$out" '"status":421,"body":"this is","body_truncated":true' "http_get by name, body cut at max_body"
grep -q '"running_commands":0' <<<"$(status)" || fail "an http_get counted as a command: $(status)"

step "http_get: no HTTP answer is a result (status 0 and what happened), not an error"
REFUSED_PORT=$(free_port)
out=$(req h4 "{\"id\":\"h4\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$REFUSED_PORT/health\"}")
assert_contains "$out" "{\"id\":\"h4\",\"ok\":true,\"status\":0,\"error\":\"connect to 127.0.0.1:$REFUSED_PORT: connection refused\",\"duration_ms\":" "http_get refused"
step "http_get with retry_for_ms: the agent tries again until the service answers, or gives up"
LATE_PORT=$(free_port)
listen h13
send "{\"id\":\"h13\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$LATE_PORT/health\",\"retry_for_ms\":20000}"
# The first try is refused before the agent logs the start: the service
# comes after it.
wait_until 10 "the waiting GET started" grep -q "request h13: http_get started" "$TMP/agent-vm1.log"
"$CFM_BUILD/cfm-svc" web --listen "127.0.0.1:$LATE_PORT" --name late --watch $$ \
    >>"$TMP/svc-late.log" 2>&1 &
PIDS[svc-late]=$!
wait_until 10 "the answer to h13" answers h13
assert_contains "$(answers h13)" '"ok":true,"status":200,"body":"ok\n"' "the GET that waited for the service"
attempts=$(answers h13 | grep -o '"attempts":[0-9]*' | cut -d: -f2)
[ "${attempts:-0}" -ge 2 ] || fail "h13 answered after ${attempts:-no} attempts: $(answers h13)"
out=$(req h14 "{\"id\":\"h14\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$REFUSED_PORT/health\",\"retry_for_ms\":300}")
assert_contains "$out" "\"status\":0,\"error\":\"connect to 127.0.0.1:$REFUSED_PORT: connection refused\"" "a GET that gave up"
attempts=$(grep -o '"attempts":[0-9]*' <<<"$out" | cut -d: -f2)
[ "${attempts:-0}" -ge 2 ] || fail "h14 gave up after ${attempts:-no} attempts: $out"
out=$(req h15 "{\"id\":\"h15\",\"op\":\"http_get\",\"url\":\"$SVC/\",\"retry_for_ms\":600001}")
assert_eq '{"id":"h15","ok":false,"error":"retry_for_ms must be an integer from 0 to 600000"}' "$out" "bad retry_for_ms"

# A server that takes connections and never answers: a stopped cfm-svc
# (the kernel still completes the handshake into its listen backlog).
MUTE_PORT=$(free_port)
"$CFM_BUILD/cfm-svc" web --listen "127.0.0.1:$MUTE_PORT" --name mute --watch $$ \
    >>"$TMP/svc-mute.log" 2>&1 &
PIDS[svc-mute]=$!
wait_until 10 "the mute service listening on $MUTE_PORT" port_open "$MUTE_PORT"
kill -STOP "${PIDS[svc-mute]}"
before=$SECONDS
out=$(req h5 "{\"id\":\"h5\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$MUTE_PORT/\",\"timeout_ms\":700}")
assert_contains "$out" "\"ok\":true,\"status\":0,\"error\":\"no answer from 127.0.0.1:$MUTE_PORT within 700 ms\"" "http_get to a mute server"
ms=$(grep -o '"duration_ms":[0-9]*' <<<"$out" | cut -d: -f2)
[ "$ms" -ge 700 ] && [ "$ms" -lt 2000 ] || fail "the mute server's GET took $ms ms for a 700 ms timeout"
[ $((SECONDS - before)) -le 3 ] || fail "the answer to h5 came after $((SECONDS - before)) s"
out=$(req h6 "{\"id\":\"h6\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$PORT/\"}")
assert_contains "$out" '"ok":true,"status":0,"error":"' "http_get to the MQTT broker (not HTTP)"

step "http_get: malformed requests are refused, naming the field"
out=$(req h7 "{\"id\":\"h7\",\"op\":\"http_get\",\"url\":\"https://127.0.0.1:$SVC_PORT/health\"}")
assert_eq "{\"id\":\"h7\",\"ok\":false,\"error\":\"url 'https://127.0.0.1:$SVC_PORT/health': scheme 'https' is not supported (only http://)\"}" "$out" "https"
out=$(req h8 '{"id":"h8","op":"http_get"}')
assert_eq '{"id":"h8","ok":false,"error":"http_get needs \"url\" (a string, http://...)"}' "$out" "no url"
out=$(req h9 "{\"id\":\"h9\",\"op\":\"http_get\",\"url\":\"$SVC/\",\"timeout_ms\":0}")
assert_eq '{"id":"h9","ok":false,"error":"timeout_ms must be an integer from 1 to 60000"}' "$out" "bad timeout"
out=$(req h10 '{"id":"h10","op":"http_get","url":"http://127.0.0.1:99999/"}')
assert_eq "{\"id\":\"h10\",\"ok\":false,\"error\":\"url 'http://127.0.0.1:99999/': the port must be a number from 1 to 65535\"}" "$out" "bad port"

step "http_get: a repeated id gets the first answer; the GET is not made again"
gets() { grep -c "GET /health?instance=web-1&n=once 200" "$TMP/svc.log"; }
once="{\"id\":\"h11\",\"op\":\"http_get\",\"url\":\"$SVC/health?instance=web-1&n=once\"}"
first=$(req h11 "$once")
assert_contains "$first" '"status":200' "h11"
assert_eq 1 "$(gets)" "GETs made for h11"
assert_eq "$first" "$(req h11 "$once")" "the answer to h11 asked again"
assert_eq 1 "$(gets)" "GETs made for h11 asked twice"
# Asked again while in flight: one GET, one answer.
listen h12
slow="{\"id\":\"h12\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$MUTE_PORT/\",\"timeout_ms\":1500}"
send "$slow"
send "$slow"
wait_until 10 "the repeat of h12 seen as running" grep -q "request h12 is running already" "$TMP/agent-vm1.log"
wait_until 10 "the answer to h12" answers h12
assert_contains "$(answers h12)" '"status":0,"error":"no answer from' "the answer to h12"
assert_eq 1 "$(grep -c 'request h12 (http_get)' "$TMP/agent-vm1.log")" "answers given to h12"
assert_eq "$(answers h12 | head -n 1)" "$(req h12 "$slow")" "the answer to h12 asked again"

step "unknown op, missing op"
out=$(req u1 '{"id":"u1","op":"reboot"}')
assert_eq '{"id":"u1","ok":false,"error":"unknown op '"'reboot'"' (known: exec, put_file, get_file, http_get, ping)"}' "$out" "unknown op"
out=$(req u2 '{"id":"u2"}')
assert_contains "$out" '"ok":false,"error":"the request needs \"op\"' "missing op"

step "a repeated id gets the first answer and does not run again"
count1=$(req count-1 '{"id":"count-1","op":"exec","shell":"echo x >> counter; wc -l < counter"}')
assert_contains "$count1" '"stdout":"1\n"' "first run"
again=$(req count-1 '{"id":"count-1","op":"exec","shell":"echo x >> counter; wc -l < counter"}')
assert_eq "$count1" "$again" "answer to a repeated id"
assert_eq 1 "$(lines "$ROOT/counter")" "runs of a repeated id"

step "a repeated id while the first run is in progress: one run, its answer"
listen dup
dup='{"id":"dup","op":"exec","shell":"P=0.05; echo y >> counter2; until [ -e go ]; do sleep $P; done; echo done"}'
send "$dup"
wait_until 10 "the first run started" test -s "$ROOT/counter2"
send "$dup"
wait_until 10 "the repeat seen as running" grep -q "request dup is running already" "$TMP/agent-vm1.log"
touch "$ROOT/go"
wait_until 10 "the answer to dup" answers dup
assert_contains "$(answers dup)" '"stdout":"done\n"' "the answer to dup"
assert_eq 1 "$(lines "$ROOT/counter2")" "runs of dup"
assert_eq "$(answers dup | head -n 1)" "$(req dup "$dup")" "the answer to dup asked again"

step "SIGTERM with nothing running: exit 0 (no handle left open, no leak), offline"
stop_agent
start_agent

step "kill -9: the broker publishes the Last Will; a command cut by the crash is not run again"
crash='{"id":"crash","op":"exec","shell":"P=0.05; echo $$ > crash.pgid; echo z >> counter3; until [ -e never ]; do sleep $P; done"}'
send "$crash"
wait_until 10 "the crash command running" test -s "$ROOT/counter3"
wait_until 5 "its process group written" test -s "$ROOT/crash.pgid"
KILL_GROUPS+=("$(cat "$ROOT/crash.pgid")")
kill -KILL "${PIDS[agent-vm1]}"
wait "${PIDS[agent-vm1]}" 2>/dev/null
unset "PIDS[agent-vm1]"
wait_until 10 "status offline (Last Will)" status_has "{\"state\":\"offline\",\"vm\":\"$VM\"}"
cleanup_groups

step "restart: answers survive, the cut command is answered 'outcome unknown'"
start_agent
assert_eq '{"id":"crash","ok":false,"error":"the agent stopped while this request was running; its outcome is unknown"}' \
    "$(req crash "$crash")" "crash asked again"
assert_eq 1 "$(lines "$ROOT/counter3")" "runs of crash"
assert_eq "$count1" "$(req count-1 '{"id":"count-1","op":"exec","shell":"echo x >> counter"}')" "count-1 after a restart"
assert_eq 1 "$(lines "$ROOT/counter")" "runs of count-1 after a restart"

step "SIGTERM: the running command and HTTP GET are stopped, status offline, exit 0"
listen last-get
send "{\"id\":\"last\",\"op\":\"exec\",\"shell\":\"sleep $LONG\"}"
send "{\"id\":\"last-get\",\"op\":\"http_get\",\"url\":\"http://127.0.0.1:$MUTE_PORT/\",\"timeout_ms\":60000}"
wait_until 10 "status counting the running command" status_has '"running_commands":1'
wait_until 10 "the GET in flight" grep -q "request last-get: http_get started" "$TMP/agent-vm1.log"
stop_agent
assert_contains "$(cat "$ROOT/.cfm-agent/answers/last.json")" '"error":"the agent stopped while' "the stopped command's answer"
wait_until 10 "the answer to last-get" answers last-get
assert_contains "$(answers last-get)" '"ok":true,"status":0,"error":"the agent stopped before an answer came"' "the stopped GET's answer"
# A GET's answer is kept in memory only: made again after a restart.
assert_eq 0 "$(find "$ROOT/.cfm-agent/answers" -name 'h*.json' -o -name 'last-get.json' | wc -l)" "GET answers on disk"

# A "service": started in the background by a command, it takes 300 ms to
# stop on SIGTERM (its trap sleeps, then says it stopped cleanly), and
# writes its pid first.
SERVICE='{"id":"ID","op":"exec","shell":"sh -c '"'"'trap \"sleep 0.3; echo clean > svc.stopped; exit 0\" TERM; echo $$ > svc.pid; while :; do sleep 0.05; done'"'"' >/dev/null 2>&1 </dev/null &"}'
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
DETACHED='{"id":"ID","op":"exec","argv":["sh","-c","echo $$ > dsvc.pid; exec sleep '$LONG'"],"detach":true}'

step "without --stop-vm-processes (a real VM): the VM's services outlive a restart of the agent"
start_agent
rm -f "$ROOT/svc.pid"
rm -f "$ROOT/dsvc.pid"
req s1 "${SERVICE/ID/s1}" >/dev/null
req sd1 "${DETACHED/ID/sd1}" >/dev/null
wait_until 10 "the service's pid" test -s "$ROOT/svc.pid"
wait_until 10 "the detached service's pid" test -s "$ROOT/dsvc.pid"
svc=$(cat "$ROOT/svc.pid")
dsvc=$(cat "$ROOT/dsvc.pid")
KILL_GROUPS+=("$dsvc")
stop_agent
alive "$svc" || fail "the service $svc died with the agent"
alive "$dsvc" || fail "the detached service $dsvc died with the agent"
kill -TERM "$svc" "$dsvc"
wait_until 10 "the service to stop" sh -c "! kill -0 $svc 2>/dev/null || [ \"\$(awk '{print \$3}' /proc/$svc/stat)\" = Z ]"

step "with --stop-vm-processes (the agent is the VM): it exits once the VM's services are gone"
start_agent --stop-vm-processes
rm -f "$ROOT/svc.pid" "$ROOT/svc.stopped"
rm -f "$ROOT/dsvc.pid"
req s2 "${SERVICE/ID/s2}" >/dev/null
req sd2 "${DETACHED/ID/sd2}" >/dev/null
wait_until 10 "the service's pid" test -s "$ROOT/svc.pid"
wait_until 10 "the detached service's pid" test -s "$ROOT/dsvc.pid"
svc=$(cat "$ROOT/svc.pid")
dsvc=$(cat "$ROOT/dsvc.pid")
stop_agent
alive "$svc" && fail "the agent exited while the VM's service $svc was still stopping"
alive "$dsvc" && fail "the agent exited while the VM's detached service $dsvc was still running"
assert_eq clean "$(cat "$ROOT/svc.stopped" 2>/dev/null)" "the service's own clean stop, before the agent exited"

if grep -E "handles were left open|runtime error|Sanitizer" "$TMP/agent-vm1.log"; then
    fail "the agent's log reports a leak or undefined behaviour"
fi
pass
