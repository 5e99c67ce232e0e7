#!/bin/sh
# Runs every test program in BUILD/tests and the shell tests, then
# prints the total as the last line: "N passed, N failed". Exits non-zero if
# any test failed or a program crashed before printing its summary.
build=${1:-build}
passed=0
failed=0
status=0

# run_one NAME COMMAND...: runs one test program and adds its summary line
# ("NAME: N passed, N failed") to the totals; no summary counts as a failure.
run_one() {
  name=$1
  shift
  out=$("$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | grep -E "^$name: [0-9]+ passed, [0-9]+ failed$" | tail -n 1)
  if [ -z "$line" ]; then
    echo "$name: crashed or printed no summary (exit $rc)"
    failed=$((failed + 1))
    status=1
    return
  fi
  passed=$((passed + $(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
  failed=$((failed + $(printf '%s' "$line" | sed -E 's/.*, ([0-9]+) failed$/\1/')))
  [ $rc -eq 0 ] || status=1
}

for t in "$build"/tests/test_*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
# Shell tests take the tool's path: tests/test_NAME.sh build/tqai.
if [ -x "$build/tqai" ]; then
  for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t" .sh)" sh "$t" "$build/tqai"
  done
fi
echo "$passed passed, $failed failed"
exit $status
