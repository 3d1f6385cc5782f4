#!/bin/sh
# run_hang.sh MODE TIMEOUT_S WANT_NAMED mpirun ... test_hang
# Runs `mpirun ... test_hang MODE TIMEOUT_S PIDDIR` and passes when the job
# (whose last rank stops itself) ended on its own:
#  - within TIMEOUT_S + 10 s (a hard limit of TIMEOUT_S + 30 s kills it),
#  - with a nonzero exit code,
#  - with an abort message that names WANT_NAMED (e.g. "world rank 2") as
#    not answering,
#  - and with none of the ranks' processes left.
mode=$1 limit=$2 want=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
t0=$(date +%s.%N)
out=$(timeout -s KILL $((${limit%.*} + 30)) "$@" "$mode" "$limit" "$dir" 2>&1)
rc=$?
t1=$(date +%s.%N)
printf '%s\n' "$out"
took=$(echo "$t1 - $t0" | bc)
echo "run_hang: mode $mode, exit code $rc after $took s (deadline $limit s)"
fail=0
if [ "$rc" -eq 0 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL: exit code $rc (0: the job did not notice; 137: killed by the test's limit)"
    fail=1
fi
if [ "$(echo "$took > $limit + 10" | bc)" -eq 1 ]; then
    echo "FAIL: the job took $took s, more than the deadline $limit s + 10 s"
    fail=1
fi
if ! printf '%s\n' "$out" | grep 'aborting the job' | grep -q "past the deadline of $limit s"; then
    echo "FAIL: no abort message naming the deadline"
    fail=1
fi
silent=$(printf '%s\n' "$out" | grep 'aborting the job' |
    sed -n 's/.*Not answering after [0-9.]* s more ([^)]*):\(.*\)/\1/p' | sed 's/\. Waiting:.*//')
if ! printf '%s\n' "$silent" | grep -q "$want ("; then
    echo "FAIL: the abort message does not name '$want' as not answering"
    fail=1
fi
if printf '%s\n' "$out" | grep -q 'FAIL'; then
    fail=1
fi
sleep 1 # mpirun has returned; its ranks get a moment to be reaped
for f in "$dir"/rank.*; do
    [ -e "$f" ] || { echo "FAIL: no pid files (the ranks did not start?)"; fail=1; break; }
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*zombie' /proc/"$pid"/status 2>/dev/null; then
        echo "FAIL: process $pid (${f##*/}) is still there"
        kill -KILL "$pid" 2>/dev/null
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo PASS
exit "$fail"
