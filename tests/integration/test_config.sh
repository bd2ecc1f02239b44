#!/usr/bin/env bash
# cfm-manager's configuration: every error (a flag, a config file's syntax,
# field or type) stops it at once with status 2 and ONE line on stderr naming
# the field; --help is status 0; flags override the config file; SIGHUP
# re-reads the file, and a broken file on SIGHUP is reported and ignored
# while the manager keeps serving.
source "$(dirname "$0")/lib.sh"

MANAGER=$CFM_BUILD/cfm-manager
closed=$(free_port)   # nothing listens there: a manager that got this far would hang

# refused EXPECTED ARGS...: cfm-manager ARGS exits 2 at once with exactly one
# line on stderr containing EXPECTED, and nothing on stdout.
refused() {
    local want=$1 rc=0 err
    shift
    timeout 20 "$MANAGER" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    err=$(cat "$TMP/err")
    assert_eq 2 "$rc" "exit status of cfm-manager $* (stderr: $err)"
    assert_eq 1 "$(wc -l <"$TMP/err")" "lines on stderr for $*: $err"
    assert_contains "$err" "cfm-manager: " "stderr for $*"
    assert_contains "$err" "$want" "stderr for $*"
    assert_eq "" "$(cat "$TMP/out")" "stdout for $*"
}

# config NAME TEXT: writes a config file $TMP/NAME.json and prints its path.
config() {
    printf '%s\n' "$2" >"$TMP/$1.json"
    echo "$TMP/$1.json"
}

BASE=(--state-dir "$TMP/state" --broker "127.0.0.1:$closed")

step "flag errors: status 2, one line naming the flag or field"
refused "site: missing (--site ID or \"site\" in the config)" "${BASE[@]}"
refused "site: site 'a/b' contains '/'" --site a/b "${BASE[@]}"
refused "site: site 'a+b' contains '+'" --site a+b "${BASE[@]}"
refused "--site: longer than 64 characters" --site "$(printf 's%.0s' {1..65})" "${BASE[@]}"
refused "--broker: '99999' is not a port from 1 to 65535" --site site-a --state-dir "$TMP/state" \
    --broker 127.0.0.1:99999
refused "--broker: 'x' is not a port from 1 to 65535" --site site-a --state-dir "$TMP/state" \
    --broker 127.0.0.1:x
refused "--frob: unknown flag" --site site-a --frob on "${BASE[@]}"
refused "--frob: needs a value (or unknown flag)" --site site-a "${BASE[@]}" --frob
refused "--site: needs a value" "${BASE[@]}" --site
refused "--log-level: must be debug, info, warn or error" --site site-a --log-level loud "${BASE[@]}"
refused "--driver.type: unknown driver (known: local)" --site site-a --driver ec9 "${BASE[@]}"
refused "--event-dedup-s: '0' is not a number of seconds from 1 to" --site site-a \
    --event-dedup-s 0 "${BASE[@]}"
refused "--event-dedup-s: '7d' is not a number of seconds from 1 to" --site site-a \
    --event-dedup-s 7d "${BASE[@]}"
refused "--run-history-s: '0' is not a number of seconds from 1 to" --site site-a \
    --run-history-s 0 "${BASE[@]}"
refused "--run-history-s: '30d' is not a number of seconds from 1 to" --site site-a \
    --run-history-s 30d "${BASE[@]}"
refused "state_dir: missing" --site site-a --broker "127.0.0.1:$closed"
touch "$TMP/a-file"
refused "state_dir: '$TMP/a-file' is not a directory" --site site-a --state-dir "$TMP/a-file" \
    --broker "127.0.0.1:$closed"
refused "--password-file: cannot open '$TMP/none': No such file or directory" --site site-a \
    --password-file "$TMP/none" "${BASE[@]}"

step "config file errors: status 2, one line naming the position or the field"
f=$(config syntax '{"site": "site-a",
  "broker": {"host": "127.0.0.1", oops}}')
refused "$f: line 2, column 38: " --config "$f" "${BASE[@]}"
f=$(config unknown '{"site": "site-a", "colour": "blue"}')
refused "$f: unknown field 'colour' (known: site, broker, state_dir, driver, procedures_dir, log_level, event_dedup_s, run_history_s)" \
    --config "$f" "${BASE[@]}"
f=$(config port '{"site": "site-a", "broker": {"port": "x"}}')
refused "$f: broker.port: unknown field or wrong type" --config "$f" "${BASE[@]}"
f=$(config port-range '{"site": "site-a", "broker": {"port": 70000}}')
refused "$f: broker.port: must be from 1 to 65535" --config "$f" "${BASE[@]}"
f=$(config broker-extra '{"site": "site-a", "broker": {"hots": "x"}}')
refused "$f: broker.hots: unknown field or wrong type" --config "$f" "${BASE[@]}"
f=$(config loud '{"site": "site-a", "log_level": "loud"}')
refused "$f: log_level: must be debug, info, warn or error" --config "$f" "${BASE[@]}"
f=$(config level-type '{"site": "site-a", "log_level": 3}')
refused "$f: log_level: must be debug, info, warn or error" --config "$f" "${BASE[@]}"
f=$(config dedup-type '{"site": "site-a", "event_dedup_s": "7d"}')
refused "$f: event_dedup_s: must be an integer from 1 to" --config "$f" "${BASE[@]}"
f=$(config dedup-range '{"site": "site-a", "event_dedup_s": -5}')
refused "$f: event_dedup_s: must be an integer from 1 to" --config "$f" "${BASE[@]}"
f=$(config history-type '{"site": "site-a", "run_history_s": 2.5}')
refused "$f: run_history_s: must be an integer from 1 to" --config "$f" "${BASE[@]}"
f=$(config site-type '{"site": 7}')
refused "$f: site: must be a string" --config "$f" "${BASE[@]}"
f=$(config site-bad '{"site": "a#b"}')
refused "site: site 'a#b' contains '#'" --config "$f" "${BASE[@]}"
f=$(config array '["site-a"]')
refused "$f: must be a JSON object" --config "$f" "${BASE[@]}"
f=$(config dup '{"site": "site-a", "site": "site-b"}')
refused "$f: line 1, column " --config "$f" "${BASE[@]}"
f=$(config driver '{"site": "site-a", "driver": {"type": "ec9"}}')
refused "driver.type: unknown driver (known: local)" --config "$f" "${BASE[@]}"
refused "$TMP/nowhere.json: unable to open $TMP/nowhere.json" --config "$TMP/nowhere.json" \
    "${BASE[@]}"
refused "--config: needs a FILE" "${BASE[@]}" --site site-a --config

step "--help: status 0, the usage on stdout"
for help in --help -h; do
    rc=0
    "$MANAGER" "$help" >"$TMP/out" 2>"$TMP/err" || rc=$?
    assert_eq 0 "$rc" "exit status of cfm-manager $help"
    assert_contains "$(cat "$TMP/out")" "usage: cfm-manager" "$help"
    assert_eq "" "$(cat "$TMP/err")" "stderr of $help"
done
f=$(config help-driver '{"driver": "local"}')
rc=0
"$MANAGER" --config "$f" --help >"$TMP/out" 2>"$TMP/err" || rc=$?
assert_eq 0 "$rc" "exit status of cfm-manager --config FILE --help (stderr: $(cat "$TMP/err"))"

step "a valid config file with flags overriding it"
start_broker a
PORT=${BROKER_PORT[a]}
# The file names another site, a closed port and a wrong state dir: the flags
# that start_manager adds (--site, --broker, --state-dir) must win wherever
# they stand; the file's own log_level and procedures_dir apply.
mkdir -p "$TMP/procs"
CONF=$TMP/site.json
cat >"$CONF" <<EOF
{"site": "site-q",
 "broker": {"host": "127.0.0.1", "port": $closed},
 "state_dir": "$TMP/not-here",
 "procedures_dir": "$TMP/procs",
 "driver": {"type": "local"},
 "log_level": "info"}
EOF
start_manager site-c a --config "$CONF"
out=$(ctl site-c ping) || fail "ping site-c: $out"
assert_eq "site site-c answered" "$out" "ping on the flag's site"
assert_contains "$(cat "$TMP/site-c.log")" "site site-c started (broker 127.0.0.1:$PORT, state $TMP/site-c)" \
    "the manager's start line"
[ ! -e "$TMP/not-here" ] || fail "the file's state_dir was used although --state-dir overrides it"
MANAGER_BROKER[site-q]=a
rc=0
ctl site-q -t 1 ping >/dev/null 2>&1 || rc=$?
assert_eq 1 "$rc" "nobody answers for the file's site"

step "SIGHUP re-reads the configuration"
LOG=$TMP/site-c.log
PID=${PIDS[manager-site-c]}
log_count() { grep -cF -- "$1" "$LOG"; }
logged_more() { [ "$(log_count "$1")" -gt "$2" ]; }
# hup TEXT: sends SIGHUP and waits for one more log line containing TEXT.
hup() {
    local n
    n=$(log_count "$1")
    kill -HUP "$PID" || fail "kill -HUP"
    wait_until 10 "the manager to log '$1' after SIGHUP" logged_more "$1" "$n"
}
hup "SIGHUP: configuration reloaded"

# The reload applies the file's log_level. At "info", applying a replicated
# BusinessSystem object logs nothing; at "debug" it does.
# business_system ID: publishes a BusinessSystem of another site, which every
# manager applies (membership is read from it), then waits until site-c has
# handled it (a ping sent after it is answered after it).
business_system() {
    pub a "cfm/v1/sys/$1/obj/BusinessSystem/$1" \
        "{\"kind\":\"BusinessSystem\",\"id\":\"$1\",\"system\":\"$1\",\"version\":1,\"origin\":\"site-x\",\"body\":{\"sites\":[\"site-x\"],\"primary\":\"site-x\"}}" ||
        fail "publish $1"
    ctl site-c ping >/dev/null || fail "ping after publishing $1"
}
business_system zz1
! grep -q "DEBUG.*zz1" "$LOG" || fail "a debug line at log level info"
sed -i 's/"log_level": "info"/"log_level": "debug"/' "$CONF"
grep -q '"debug"' "$CONF" || fail "test setup: log_level not changed"
hup "SIGHUP: configuration reloaded"
business_system zz2
wait_until 10 "a debug line about zz2 at log level debug" grep -q "DEBUG.*zz2" "$LOG"
run_ok() { out=$(ctl site-c --json objects list --system zz2) && [[ "$out" == *'"id": "zz2"'* ]]; }
wait_until 10 "zz2 stored" run_ok

step "SIGHUP with a broken file: reported, ignored, and the manager keeps serving"
printf '{"site": "site-q",\n "log_level": "info",,}\n' >"$CONF"
hup "SIGHUP: configuration not reloaded: $CONF: line 2, column 22: "
out=$(ctl site-c ping) || fail "ping after a failed reload: $out"
assert_eq "site site-c answered" "$out" "ping after a failed reload"
# A file that fails after the driver was read (nothing of it may stay behind).
printf '{"driver": "local", "broker": {"port": "x"}}\n' >"$CONF"
hup "SIGHUP: configuration not reloaded: $CONF: broker.port: unknown field or wrong type"
# The failed reloads kept the level: still debug.
business_system zz3
wait_until 10 "a debug line about zz3 after the failed reloads" grep -q "DEBUG.*zz3" "$LOG"
# A good file again is taken again.
printf '{"site": "site-q", "log_level": "info"}\n' >"$CONF"
hup "SIGHUP: configuration reloaded"
business_system zz4
! grep -q "DEBUG.*zz4" "$LOG" || fail "a debug line after the reload back to info"
out=$(ctl site-c ping) || fail "ping at the end: $out"

manager_alive site-c || fail "the manager died"
stop_manager site-c || fail "manager exit status $? on SIGTERM"
pass
