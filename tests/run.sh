#!/bin/sh
# Runs every test program in BUILD/tests and prints the total as the last line:
# "N passed, N failed". Exits non-zero if any test failed or a program crashed.
build=${1:-build}
passed=0
failed=0
status=0
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  out=$("$t" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | grep -E '^[a-z_0-9]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$line" ] || [ $rc -ne 0 ]; then
    [ -z "$line" ] && { echo "$(basename "$t"): crashed or printed no summary (exit $rc)"; failed=$((failed + 1)); }
    status=1
  fi
  if [ -n "$line" ]; then
    p=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
    f=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
    passed=$((passed + p))
    failed=$((failed + f))
  fi
done
echo "$passed passed, $failed failed"
exit $status
