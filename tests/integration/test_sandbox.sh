#!/usr/bin/env bash
# The procedure sandbox holds: each escape in tests/integration/procedures/
# (esc_*.lua: io, os.execute, require outside lib/, bytecode, endless
# loops, memory, recursion, changing what every run shares, collectgarbage,
# debug, package, dofile, rawset) fails its own run with a clear error
# naming file:line, while the manager keeps serving: it answers ping and a
# normal procedure that uses everything the escapes tried to break still
# succeeds after all of them. A bound procedure that does not compile, or
# does not exist, makes `system load` fail naming it; `procedure check`
# passes a good file and names file:line of a bad one.
source "$(dirname "$0")/lib.sh"

PROCS=$CFM_SRC/tests/integration/procedures

# line_of FILE: the line of FILE marked "-- escape".
line_of() {
    local n
    n=$(grep -n -- '-- escape' "$PROCS/$1" | head -n 1 | cut -d: -f1)
    [ -n "$n" ] || fail "test setup: no '-- escape' marker in $1"
    echo "$n"
}

# The escapes and the error each run must end with ("@" = file:line of
# the marked line, prefixed to the text).
declare -A ESCAPES=(
    [esc_io]="@attempt to index a nil value (global 'io')"
    [esc_os]="@attempt to call a nil value (field 'execute')"
    [esc_require_dots]="@require: '..x' is not a module name"
    [esc_require_path]="@require: 'x/../../etc' is not a module name"
    [esc_dump]="@attempt to call a nil value (field 'dump')"
    [esc_load_binary]="@attempt to load a binary chunk (mode is 't')"
    [esc_load_mode]="@load: binary chunks are not allowed (mode must be \\\"t\\\")"
    [esc_loop]="@instruction budget of 50000000 per resume exceeded"
    [esc_loop_pcall]="@instruction budget of 50000000 per resume exceeded"
    [esc_memory]="not enough memory (the run's memory limit was reached)"
    [esc_recursion]="@stack overflow"
    [esc_string_format]="@attempt to change a read-only library table (field 'format')"
    [esc_pairs]="@attempt to change a read-only library table (field 'format')"
    [esc_setmetatable]="@cannot change a protected metatable"
    [esc_string_mt]="@attempt to index a string value"
    [esc_cfm_site]="@attempt to change a read-only library table (field 'site')"
    [esc_gc]="@attempt to call a nil value (global 'collectgarbage')"
    [esc_debug]="@attempt to index a nil value (global 'debug')"
    [esc_package]="@attempt to index a nil value (global 'package')"
    [esc_dofile]="@attempt to call a nil value (global 'dofile')"
    [esc_rawset]="@attempt to call a nil value (global 'rawset')"
)

# system_file OUT EXTRA-BINDINGS: a one-site system binding every escape
# (event type = script name) and uses_format, plus EXTRA-BINDINGS.
no_sanitizer_reports() {
    ! grep -l -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$TMP"/*.log
}

system_file() {
    {
        echo '{"id": "shop", "sites": ["site-a"], "primary": "site-a", "procedures": {'
        for name in "${!ESCAPES[@]}"; do
            echo "  \"$name\": {\"script\": \"$name.lua\"},"
        done
        echo "  $2"
        echo '  "uses_format": {"script": "uses_format.lua"}},'
        echo ' "objects": {"VMClass": {"small": {"image": "cfm-local", "cpu": 1, "memory_mb": 256}}}}'
    } >"$1"
}

start_broker a
start_manager site-a a --procedures "$PROCS"

step "a bound procedure with a syntax error is refused at load, naming file:line"
system_file "$TMP/broken.json" '"broken": {"script": "bad_syntax.lua"},'
out=$(ctl site-a system load "$TMP/broken.json" 2>&1) && fail "a system binding bad_syntax.lua loaded: $out"
assert_contains "$out" "procedures.broken: bad_syntax.lua:3: unexpected symbol near '='" "load error"

step "a binding naming a missing script is refused at load"
system_file "$TMP/missing.json" '"gone": {"script": "missing.lua"},'
out=$(ctl site-a system load "$TMP/missing.json" 2>&1) && fail "a system binding missing.lua loaded: $out"
assert_contains "$out" "procedures.gone: procedure missing.lua not found in $PROCS" "load error"
assert_eq 0 "$(count_objects site-a)" "objects after two refused loads"

step "procedure check passes a good file and names file:line of a bad one"
out=$(ctl site-a procedure check "$PROCS/uses_format.lua" 2>&1) || fail "check of a good file: $out"
assert_eq "$PROCS/uses_format.lua: ok" "$out" "check of a good file"
rc=0
out=$(ctl site-a procedure check "$PROCS/bad_syntax.lua" 2>&1) || rc=$?
assert_eq 1 "$rc" "exit status of a check of a bad file"
assert_eq "cfmctl: bad_syntax.lua:3: unexpected symbol near '='" "$out" "check of a bad file"

step "the system with every escape bound loads"
system_file "$TMP/shop.json" ""
out=$(ctl site-a system load "$TMP/shop.json") || fail "load: $out"
assert_contains "$out" "2 created" "load"

step "every escape runs (${#ESCAPES[@]} of them, all at once)"
for name in "${!ESCAPES[@]}"; do
    echo "{\"id\": \"ev-$name\", \"payload\": {}}" >"$TMP/ev-$name.json"
    pub a "cfm/v1/sys/shop/event/$name" "$(cat "$TMP/ev-$name.json")"
done

step "each escape fails its run with its own error, at file:line"
for name in "${!ESCAPES[@]}"; do
    run=$(run_id "ev-$name" site-a "$name")
    wait_until 60 "run of $name ($run) ended" run_ended site-a "$run"
    assert_eq '"failed"' "$(run_field site-a "$run" state)" \
        "state of the run of $name (result $(run_field site-a "$run" result))"
    want=${ESCAPES[$name]}
    [ "${want:0:1}" = "@" ] && want="$name.lua:$(line_of "$name.lua"): ${want:1}"
    error=$(run_field site-a "$run" error)
    assert_contains "$error" "$want" "error of $name"
    assert_eq "" "$(run_field site-a "$run" result)" "result of the failed $name"
done
assert_eq "${#ESCAPES[@]}" "$(ctl site-a runs list --system shop | awk '$5 == "failed"' | wc -l)" \
    "failed runs"

step "the manager still serves: ping, and a run using string.format, string methods, cfm.site, require"
manager_alive site-a || fail "the manager died"
ctl site-a ping >/dev/null || fail "no ping answer after the escapes"
pub a cfm/v1/sys/shop/event/uses_format '{"id": "ev-after", "payload": {}}'
run=$(run_id ev-after site-a uses_format)
out=$(ctl site-a runs wait "$run" --timeout 30 2>&1) || fail "the normal run after the escapes: $out"
result=$(run_field site-a "$run" result)
assert_contains "$result" '"text": "site-a-7"' "string.format after the escapes"
assert_contains "$result" '"upper": "ABC"' "string methods after the escapes"
assert_contains "$result" '"site": "site-a"' "cfm.site after the escapes"
assert_contains "$result" '"util": "pong from site-a: hi"' "require of a lib/ module"
n=$(echo "$result" | sed -n 's/.*"string_fns": \([0-9]*\).*/\1/p')
[ "${n:-0}" -ge 15 ] || fail "pairs(string) lists $n functions after the escapes: $result"

step "the manager stops cleanly"
stop_manager site-a || fail "manager exit status $? on SIGTERM"
no_sanitizer_reports || fail "sanitizer reports in the logs"
pass
