#!/usr/bin/env bash
# No acknowledged write is lost: a write committed while the broker cannot
# acknowledge it stays in the manager's outbox; the manager is killed with
# SIGKILL before any PUBACK; after a restart the outbox is sent again and
# the other site receives the object.
source "$(dirname "$0")/lib.sh"

start_broker b
BRIDGE=("connection a-to-b" "address 127.0.0.1:${BROKER_PORT[b]}" "topic cfm/v1/# both 1"
        "cleansession false" "try_private true" "bridge_protocol_version mqttv50" "restart_timeout 1 2")
start_broker a "${BRIDGE[@]}"
PROCS="$CFM_SRC/tests/integration/outbox-procedures"
start_manager site-a a --procedures "$PROCS"
start_manager site-b b --procedures "$PROCS"
cat >"$TMP/sys.json" <<'SYS'
{"id": "shop", "sites": ["site-a", "site-b"], "primary": "site-a",
 "procedures": {"write": {"script": "write_late.lua"}},
 "objects": {"VMClass": {"small": {"image": "i", "cpu": 1, "memory_mb": 64}}}}
SYS
ctl site-a system load "$TMP/sys.json" >/dev/null || fail "load"
at_b() { ctl site-b --json objects list --system shop --kind VMClass | grep -q '"small"'; }
wait_until 20 "B to hold the system" at_b

step "a run at A waits; A's broker is frozen; the run writes"
ctl site-a event publish shop write >/dev/null
waiting() { ctl site-a runs list --system shop | grep write_late | grep -q waiting; }
wait_until 20 "the run to wait" waiting
ctl site-a event publish shop go >/dev/null
got_go() { grep -q "got go; writing in 2 s" "$TMP/site-a.log"; }
wait_until 10 "the run to receive go" got_go
kill -STOP "${PIDS[broker-a]}"
# The go event is already on its way to A; the write happens while the broker
# is frozen. It is committed in A's store, its message unacknowledged.
committed() {
    sqlite3 "$TMP/site-a/cfm.db" "select count(*) from objects where id = 'written-late'" | grep -q '^1$'
}
wait_until 20 "the write to be committed at A" committed
queued() { [ "$(sqlite3 "$TMP/site-a/cfm.db" "select count(*) from outbox")" -gt 0 ]; }
wait_until 5 "its message to be in A's outbox" queued

step "A and its frozen broker are killed before any acknowledgement; both restart"
kill_manager site-a
kill_broker a            # SIGKILL of the frozen broker: the unread message dies with it
start_broker a "${BRIDGE[@]}"
bridged() { grep -q "a-to-b" "$TMP/broker-b.log"; }
wait_until 20 "the bridge to come back" bridged
ctl site-b --json objects list --system shop --kind Address | grep -q written-late &&
    fail "B has the object before A restarted (the message was not lost: test setup)"
start_manager site-a a --procedures "$PROCS"
late_at_b() { ctl site-b --json objects list --system shop --kind Address | grep -q written-late; }
wait_until 30 "the object written before the crash to reach B" late_at_b
drained() { [ "$(sqlite3 "$TMP/site-a/cfm.db" "select count(*) from outbox")" = 0 ]; }
wait_until 20 "A's outbox to drain" drained

step "B dies applying a burst of objects (a read's transaction not committed); restarted, it has them all"
# The objects of one bus read are committed together (manager.c,
# flush_objects), after the broker had their PUBACKs: what B loses in the
# crash comes back from A's digest when B is back.
N=1500
{
    printf '{"id": "shop", "sites": ["site-a", "site-b"], "primary": "site-a",\n'
    printf ' "procedures": {"write": {"script": "write_late.lua"}},\n'
    printf ' "objects": {"VMClass": {"small": {"image": "i", "cpu": 1, "memory_mb": 64}},\n'
    printf '  "Address": {"written-late": {"pool": "public", "description": "outbox"}'
    for i in $(seq -w 1 "$N"); do printf ',\n   "burst-%s": {"pool": "public"}' "$i"; done
    printf '}}}\n'
} >"$TMP/burst.json"
kill_manager site-b
CFM_FAILPOINT=apply_object:700:done start_manager site-b b --procedures "$PROCS"
ctl site-a system load "$TMP/burst.json" >/dev/null || fail "load of the burst"
died_of_failpoint site-b apply_object:700:done
bursts() { sqlite3 "$TMP/site-b/cfm.db" "select count(*) from objects where id like 'burst-%'"; }
had=$(bursts)
[ "$had" -lt "$N" ] || fail "B had all $N objects before its restart (the kill came too late)"
[ "$had" -lt 700 ] || fail "B had $had objects on disk after dying at the 700th: the read's uncommitted ones survived?"
step "B held $had of $N on disk after the crash"
start_manager site-b b --procedures "$PROCS"
all_at_b() { [ "$(bursts)" = "$N" ]; }
wait_until 60 "B to hold all $N objects after its restart" all_at_b
pass
