#!/bin/sh
# Runs `mpirun ... test_abort` (the arguments) and passes when the job ended
# with the aborting rank's exit code 3 and its message: the waiting ranks
# were taken down too, or ctest's timeout would have fired first.
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 3 ]; then
    echo "FAIL: the job exited with $rc, want 3"
    exit 1
fi
if ! printf '%s\n' "$out" | grep -q 'aborting the job (exit code 3): deliberate abort'; then
    echo "FAIL: no abort message with rank and reason"
    exit 1
fi
echo PASS
