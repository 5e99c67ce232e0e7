#!/bin/sh
# test_shipped_model.sh - the model the project ships (models/tqai-tiny.gguf):
# "tqai run" without -m finds it and generates text through a K4/V2 cache,
# printing speed and cache size; its logits match transformers' float32
# logits computed on the training machine from the trained weights
# (tests/data/models/tqai-tiny.logits, fp16 keys and values; the bound allows
# for the q8_0 weights); and TQAI_MODEL overrides the default.
# Usage: sh tests/test_shipped_model.sh build/tqai [build/tests/test_model]
# Ends with "test_shipped_model: N passed, N failed".

tool=${1:-build/tqai}
test_model=${2:-$(dirname "$tool")/tests/test_model}
model=models/tqai-tiny.gguf
passed=0
failed=0

tmp=${TMPDIR:-/tmp}/test_shipped_model.$$
mkdir "$tmp" || { echo "test_shipped_model: cannot create $tmp"; echo "test_shipped_model: 0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

check "the shipped model is in the repository" '[ -f "$model" ]'
size=$(wc -c <"$model" 2>/dev/null || echo 0)
check "the shipped model is at most 30 MB ($size bytes)" '[ "$size" -gt 0 ] && [ "$size" -le 30000000 ]'

# Greedy, so the text is the same on every run.
env -u TQAI_MODEL "$tool" run -n 24 --greedy "The purpose of this manual is" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "tqai run without -m exits 0" '[ $rc -eq 0 ]'
words=$(wc -w <"$tmp/out")
check "it generates text ($words words)" '[ "$words" -ge 8 ]'
check "it prints the decode speed" 'grep -q "^decode: 24 tokens in .* tok/s" "$tmp/err"'
check "it prints the cache size, K4/V2 by default" 'grep -q "^KV cache (K4/V2): .* allocated" "$tmp/err"'

TQAI_MODEL=$tmp/none.gguf "$tool" run -n 4 "x" >/dev/null 2>"$tmp/err"
rc=$?
check "TQAI_MODEL overrides the default (a missing file fails, status 1)" '[ $rc -eq 1 ] && grep -q "none.gguf" "$tmp/err"'

if [ -x "$test_model" ]; then
  "$test_model" --compare "$model" tests/data/models/tqai-tiny.logits 1e-2 >"$tmp/cmp" 2>&1
  rc=$?
  check "logits against transformers' within 1e-2 of the largest: $(cat "$tmp/cmp")" '[ $rc -eq 0 ]'
else
  not_ok "test_model not built ($test_model)"
fi

echo "test_shipped_model: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
