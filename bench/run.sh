#!/usr/bin/env bash
# run.sh - runs cfm's benchmarks (bench/bench_*.sh) one after the other and
# prints their figures again at the end, with the machine they ran on.
# `make bench` runs it after building build-release; see docs/performance.md.
#
#   bench/run.sh                 every benchmark
#   bench/run.sh replicate ...   only bench_replicate.sh, ...
#
# Each benchmark prints one line per figure,
#   bench: NAME value=V UNIT baseline=B ratio=R PASS|MISS (target ...)
# and a "summary:" line. A MISS is reported, not hidden: the exit status is
# 0 when every benchmark ran (1 when one broke), unless BENCH_STRICT=1, which
# also fails on a MISS. Each benchmark is stopped after BENCH_TIMEOUT
# seconds (default 300); its own waits are shorter.
set -u
here=$(cd "$(dirname "$0")" && pwd)
CFM_SRC=$(cd "$here/.." && pwd)
CFM_BUILD=${CFM_BUILD:-build-release}
case $CFM_BUILD in /*) ;; *) CFM_BUILD=$CFM_SRC/$CFM_BUILD ;; esac
export CFM_SRC CFM_BUILD

# The order of a full run: the federation benchmarks first, then the small
# ones, then procedures (event hops between runs, 10,000 waiting runs) and
# disaster recovery with local VMs; any other bench_*.sh found here runs
# after these.
order=(replicate partition manager event_hop waiting dr)

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=("${order[@]}")
    for script in "$here"/bench_*.sh; do
        name=$(basename "$script" .sh)
        name=${name#bench_}
        case " ${order[*]} " in *" $name "*) ;; *) names+=("$name") ;; esac
    done
fi

results=$(mktemp "${TMPDIR:-/tmp}/cfm-bench-results.XXXXXX")
errlog=$(mktemp "${TMPDIR:-/tmp}/cfm-bench-stderr.XXXXXX")
trap 'rm -f "$results" "$errlog"' EXIT
broken=()
start=$SECONDS

for name in "${names[@]}"; do
    script=$here/bench_$name.sh
    [ -f "$script" ] || { echo "run.sh: no benchmark $script" >&2; exit 2; }
    echo "== bench_$name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    t=$SECONDS
    timeout "${BENCH_TIMEOUT:-300}" bash "$script" 2>"$errlog" | tee -a "$results"
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        broken+=("$name")
        echo "run.sh: bench_$name failed (status $status); its errors and logs:" >&2
        tail -n 80 "$errlog" >&2
    fi
    echo "   ($((SECONDS - t)) s)"
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(free -h | awk '/^Mem:/ { print $2 }')
echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPU ${cpu:-unknown}, $mem RAM," \
    "$((SECONDS - start)) s)"
grep '^bench: ' "$results"
pass=$(grep -c '^bench: .* PASS ' "$results")
miss=$(grep -c '^bench: .* MISS ' "$results")
echo "$pass PASS, $miss MISS${broken[*]:+, broken: ${broken[*]}}"
[ ${#broken[@]} -eq 0 ] || exit 1
[ "${BENCH_STRICT:-0}" = 1 ] && [ "$miss" -gt 0 ] && exit 1
exit 0
