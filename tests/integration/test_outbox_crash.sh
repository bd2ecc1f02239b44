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
pass
