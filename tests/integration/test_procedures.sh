#!/usr/bin/env bash
# Procedures across two sites on two bridged brokers (broker a bridged to
# b), with the fixtures of tests/integration/procedures/:
# - a run at A asks a run at B (publish_cloud_event / wait_cloud_event),
#   B answers, A resumes and its result holds B's answer; runs replicate;
# - async/wait: three tasks in parallel, one failing (the run fails naming
#   tasks.lua:LINE; a pcall catches it in a variant), and real parallelism;
# - wait_cloud_event's timeout; dedup of a republished event id; an event
#   with no binding starts nothing;
# - run_at: all, target, primary with A online and, after A's manager is
#   killed (its Last Will marks it offline), at the standby B;
# - an operator cancels a waiting run; a run past timeout_s fails.
source "$(dirname "$0")/lib.sh"

PROCS=$CFM_SRC/tests/integration/procedures

# bridge_to NAME PEER: config lines for a bridge to broker PEER. MQTT 5,
# as in broker-config/: a 3.1.1 bridge drops the response topic of cfmctl
# requests, so `runs cancel` of a run at the other site would go unanswered.
bridge_to() {
    echo "connection $1-to-$2"
    echo "address 127.0.0.1:${BROKER_PORT[$2]}"
    echo "bridge_protocol_version mqttv50"
    echo "topic cfm/v1/# both 1"
    echo "cleansession false"
    echo "try_private true"
    echo "restart_timeout 1 2"
    echo "notifications true"
}

run_known() {  # run_known SITE RUN: SITE holds a record of RUN
    ctl "$1" runs show "$2" >/dev/null 2>&1
}

succeeds() {  # succeeds SITE RUN: waits for RUN to succeed (seen at SITE)
    local out
    out=$(ctl "$1" runs wait "$2" --timeout 30 2>&1) || fail "run $2: $out"
}

# runs_table SITE: RUN PROCEDURE SITE STATE, one run a line.
runs_table() {
    ctl "$1" runs list --system shop | awk 'NR > 1 { print $1, $3, $4, $5 }'
}

# settle N: publishes marker event ev-marker-N (bound to run at all sites)
# on broker a and waits until both sites' runs of it succeeded, so both
# managers have handled every event published on broker a before it.
settle() {
    pub a cfm/v1/sys/shop/event/marker "{\"id\": \"ev-marker-$1\", \"payload\": {}}"
    wait_until 30 "marker $1 ran at A" run_is site-a "$(run_id "ev-marker-$1" site-a marker)" succeeded
    wait_until 30 "marker $1 ran at B" run_is site-a "$(run_id "ev-marker-$1" site-b marker)" succeeded
}

line_of() {  # line_of FILE TEXT: the first line of procedures/FILE holding TEXT
    grep -nF -- "$2" "$PROCS/$1" | head -n 1 | cut -d: -f1
}

no_sanitizer_reports() {
    ! grep -l -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$TMP"/*.log
}

cat >"$TMP/shop.json" <<'EOF'
{
  "id": "shop",
  "sites": ["site-a", "site-b"],
  "primary": "site-a",
  "standby": "site-b",
  "procedures": {
    "ping":    {"script": "ping.lua",    "run_at": "site-a"},
    "ask":     {"script": "pong.lua",    "run_at": "site-b"},
    "tasks":   {"script": "tasks.lua",   "run_at": "site-a"},
    "timeout": {"script": "timeout.lua", "run_at": "site-a"},
    "once":    {"script": "where.lua",   "run_at": "site-a"},
    "prim":    {"script": "where.lua",   "run_at": "primary"},
    "tgt":     {"script": "where.lua",   "run_at": "target"},
    "every":   {"script": "where.lua",   "run_at": "all"},
    "marker":  {"script": "where.lua",   "run_at": "all"},
    "hold":    {"script": "hold.lua",    "run_at": "site-a", "timeout_s": 60},
    "late":    {"script": "hold.lua",    "run_at": "site-a", "timeout_s": 1}
  },
  "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}
}
EOF

start_broker b
start_broker a "$(bridge_to a b)"
start_manager site-a a --procedures "$PROCS" --log-level debug
start_manager site-b b --procedures "$PROCS" --log-level debug

step "load at A; B joins"
out=$(ctl site-a system load "$TMP/shop.json") || fail "load: $out"
assert_contains "$out" "2 created" "load"
has_objects() { [ "$(count_objects "$1" --system shop --kind VMClass)" = "$2" ]; }
# B holds the VMClass only once it subscribed to the whole system (events too).
wait_until 20 "B holds the system" has_objects site-b 1
site_state() { ctl "$1" sites list | awk -v s="$2" '$1 == s { print $2 }'; }
sees() { [ "$(site_state "$1" "$2")" = "$3" ]; }
wait_until 20 "B sees A online" sees site-b site-a online
wait_until 20 "A sees B online" sees site-a site-b online

step "run_at all: both sites run"
pub a cfm/v1/sys/shop/event/every '{"id": "ev-every", "payload": {"n": 7}}'
run_a=$(run_id ev-every site-a every)
run_b=$(run_id ev-every site-b every)
succeeds site-a "$run_a"
succeeds site-b "$run_b"
assert_contains "$(run_field site-a "$run_a" result)" '"site": "site-a"' "result of every at A"
assert_contains "$(run_field site-b "$run_b" result)" '"site": "site-b"' "result of every at B"
assert_contains "$(run_field site-b "$run_b" result)" '"n": 7' "payload seen by every at B"

step "A asks B, B answers, A resumes with B's answer"
pub a cfm/v1/sys/shop/event/ping '{"id": "ev-ping", "payload": {"token": "t-1", "text": "hello"}}'
ping_run=$(run_id ev-ping site-a ping)
succeeds site-a "$ping_run"
result=$(run_field site-a "$ping_run" result)
assert_contains "$result" '"answer": "pong from site-b: hello"' "A's result"
assert_contains "$result" '"from": "site-b"' "A's result"
assert_contains "$(run_field site-a "$ping_run" log)" "answer from site-b: pong from site-b: hello" \
    "A's run log"
pong_at() { runs_table "$1" | awk '$2 == "pong.lua" && $3 == "site-b" && $4 == "succeeded"' | wc -l; }
pong_done() { [ "$(pong_at "$1")" = 1 ]; }
wait_until 20 "B's run listed at A as succeeded" pong_done site-a
assert_eq 1 "$(pong_at site-b)" "B's pong runs at B"
pong_run=$(runs_table site-a | awk '$2 == "pong.lua" { print $1 }')
assert_contains "$(run_field site-a "$pong_run" result)" '"answered": "hello"' "B's result seen at A"
assert_eq '"site-b"' "$(run_field site-a "$pong_run" site)" "site of B's run as A sees it"

step "async/wait: a failing task fails the run, naming tasks.lua:LINE"
boom=$(line_of tasks.lua 'error("boom in task")')
[ -n "$boom" ] || fail "test setup: no error() in tasks.lua"
pub a cfm/v1/sys/shop/event/tasks '{"id": "ev-tasks-fail", "payload": {"mode": "fail"}}'
run=$(run_id ev-tasks-fail site-a tasks)
wait_until 30 "the failing tasks run ended" run_ended site-a "$run"
assert_eq '"failed"' "$(run_field site-a "$run" state)" "state of the run with a failing task"
waits=$(line_of tasks.lua 'wait(t1, t2, t3)')
error=$(run_field site-a "$run" error)
assert_contains "$error" "\"tasks.lua:$waits: task 2 failed: tasks.lua:$boom: boom in task\\nstack traceback:" \
    "error of the run"
assert_eq "" "$(run_field site-a "$run" result)" "result of the failed run"

step "async/wait: the same failure caught with pcall; the run succeeds"
pub a cfm/v1/sys/shop/event/tasks '{"id": "ev-tasks-pcall", "payload": {"mode": "pcall"}}'
run=$(run_id ev-tasks-pcall site-a tasks)
succeeds site-a "$run"
result=$(run_field site-a "$run" result)
assert_contains "$result" '"ok": false' "pcall's status"
assert_contains "$result" "\"err\": \"task 2 failed: tasks.lua:$boom: boom in task" "pcall's error"
assert_contains "$result" '"third": "c"' "a task's result after the failure"

step "async/wait: waiting on something that is not a task of the run fails the run"
pub a cfm/v1/sys/shop/event/tasks '{"id": "ev-tasks-bad", "payload": {"mode": "badwait"}}'
run=$(run_id ev-tasks-bad site-a tasks)
wait_until 30 "the bad wait run ended" run_ended site-a "$run"
assert_eq '"failed"' "$(run_field site-a "$run" state)" "state of the run with a bad wait"
assert_contains "$(run_field site-a "$run" error)" \
    "\"tasks.lua:$(line_of tasks.lua '{task = 99}'): wait: task 99 is not a task of this run\"" \
    "error of the bad wait"

step "async/wait: three tasks of sleep(0.5) run in parallel"
pub a cfm/v1/sys/shop/event/tasks '{"id": "ev-tasks-par", "payload": {"mode": "parallel"}}'
run=$(run_id ev-tasks-par site-a tasks)
succeeds site-a "$run"
assert_contains "$(run_field site-a "$run" result)" '"names": "abc"' "results of the tasks"
ms=$(run_field site-a "$run" duration_ms)
[ "$ms" -ge 500 ] && [ "$ms" -lt 1400 ] || fail "three parallel sleep(0.5) took $ms ms"
echo "three parallel sleep(0.5): $ms ms"

step "wait_cloud_event times out: nil, \"timeout\""
pub a cfm/v1/sys/shop/event/timeout '{"id": "ev-timeout", "payload": {}}'
run=$(run_id ev-timeout site-a timeout)
succeeds site-a "$run"
result=$(run_field site-a "$run" result)
assert_eq '{ "got_event": false, "why": "timeout" }' "$result" "result of the timed-out wait"
ms=$(run_field site-a "$run" duration_ms)
[ "$ms" -ge 300 ] || fail "a wait with timeout 0.3 s ended after $ms ms"

step "an event republished with the same id starts one run"
ev='{"id": "ev-once", "payload": {"n": 1}}'
pub a cfm/v1/sys/shop/event/once "$ev"
pub a cfm/v1/sys/shop/event/once "$ev"
succeeds site-a "$(run_id ev-once site-a once)"
wait_until 10 "A drops the duplicate" grep -q "duplicate event ev-once (once on shop) dropped" "$TMP/site-a.log"
assert_eq 1 "$(grep -c "event once on shop (id ev-once," "$TMP/site-a.log")" "times A handled ev-once"
grep -q "once on shop: run $(run_id ev-once site-a once) exists already" "$TMP/site-a.log" &&
    fail "the duplicate reached the rules (dedup did not drop it)"

step "an event with no binding starts nothing"
before=$(runs_table site-a | wc -l)
pub a cfm/v1/sys/shop/event/unbound '{"id": "ev-unbound", "payload": {}}'
settle 1
assert_eq $((before + 2)) "$(runs_table site-a | wc -l)" "runs at A after the unbound event and a marker"
for site in site-a site-b; do
    run_known site-a "$(run_id ev-unbound "$site" unbound)" && fail "a run of the unbound event at $site"
    grep -q "unbound on shop: no procedure is bound to 'unbound'" "$TMP/$site.log" ||
        fail "$site did not log why nothing started"
done

step "run_at target: the run happens at payload.target_site only"
pub a cfm/v1/sys/shop/event/tgt '{"id": "ev-tgt", "payload": {"target_site": "site-b"}}'
succeeds site-a "$(run_id ev-tgt site-b tgt)"
assert_contains "$(run_field site-a "$(run_id ev-tgt site-b tgt)" result)" '"site": "site-b"' "target run"
settle 2
run_known site-a "$(run_id ev-tgt site-a tgt)" && fail "the target run also ran at A"

step "run_at primary with A online: at A only"
pub a cfm/v1/sys/shop/event/prim '{"id": "ev-prim-1", "payload": {}}'
succeeds site-a "$(run_id ev-prim-1 site-a prim)"
settle 3
run_known site-a "$(run_id ev-prim-1 site-b prim)" && fail "the primary run also ran at B"

step "a primary B has never heard from is not taken for offline: nothing runs at the standby B"
cat >"$TMP/lone.json" <<'EOF'
{"id": "lone", "sites": ["site-z", "site-b"], "primary": "site-z", "standby": "site-b",
 "procedures": {"prim": {"script": "where.lua", "run_at": "primary"}}}
EOF
out=$(ctl site-b system load "$TMP/lone.json") || fail "load lone at B: $out"
pub b cfm/v1/sys/lone/event/prim '{"id": "ev-lone", "payload": {}}'
wait_until 20 "B to pass over ev-lone" grep -q "prim on lone: run_at primary: runs at site-z" \
    "$TMP/site-b.log"
run_known site-b "$(run_id ev-lone site-b prim)" && fail "the standby B ran the primary binding"

step "A's manager is killed: its Last Will marks it offline, the primary binding runs at B"
kill_manager site-a
wait_until 20 "B sees A offline" sees site-b site-a offline
pub a cfm/v1/sys/shop/event/prim '{"id": "ev-prim-2", "payload": {}}'
run=$(run_id ev-prim-2 site-b prim)
wait_until 30 "the primary run at the standby B" run_is site-b "$run" succeeded
assert_contains "$(run_field site-b "$run" result)" '"site": "site-b"' "the run at the standby"

step "A restarts: it does not run again what B ran while A was down"
start_manager site-a a --procedures "$PROCS" --log-level debug
wait_until 20 "B sees A online again" sees site-b site-a online
settle 4
run_known site-a "$(run_id ev-prim-2 site-a prim)" &&
    fail "A ran ev-prim-2 after its restart, although B ran it as the standby: $(run_field site-a "$(run_id ev-prim-2 site-a prim)" result)"
pub a cfm/v1/sys/shop/event/prim '{"id": "ev-prim-3", "payload": {}}'
succeeds site-a "$(run_id ev-prim-3 site-a prim)"

step "an operator cancels a waiting run"
pub a cfm/v1/sys/shop/event/hold '{"id": "ev-hold", "payload": {"n": 1}}'
run=$(run_id ev-hold site-a hold)
wait_until 20 "the hold run waits" run_is site-a "$run" waiting
assert_eq '"event shop/release"' "$(run_field site-a "$run" waiting_on)" "what the run waits on"
out=$(ctl site-b runs cancel "$run" 2>&1) || fail "cancel: $out"
assert_eq "run $run cancelled at site-a" "$out" "cancel"
wait_until 20 "the cancelled run seen at B" run_is site-b "$run" cancelled
assert_eq '"cancelled by an operator"' "$(run_field site-a "$run" error)" "error of the cancelled run"

step "a run past its binding's timeout_s fails with the deadline"
pub a cfm/v1/sys/shop/event/late '{"id": "ev-late", "payload": {"n": 2}}'
run=$(run_id ev-late site-a late)
wait_until 20 "the late run ended" run_ended site-a "$run"
assert_eq '"failed"' "$(run_field site-a "$run" state)" "state of the late run"
assert_eq '"deadline of 1 s exceeded"' "$(run_field site-a "$run" error)" "error of the late run"

step "the managers stop cleanly"
stop_manager site-a || fail "A's exit status $? on SIGTERM"
stop_manager site-b || fail "B's exit status $? on SIGTERM"
no_sanitizer_reports || fail "sanitizer reports in the logs"
pass
