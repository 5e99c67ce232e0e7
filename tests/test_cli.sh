#!/bin/sh
# test_cli.sh - checks the tqai command-line tool from the outside: help texts,
# info, benchmark results (human and JSON), and that bad command lines fail
# with a message.
# Usage: sh tests/test_cli.sh build/tqai
# Prints "ok - ..." or "not ok - ..." per check and ends with
# "test_cli: N passed, N failed"; exits 1 if any check failed.

tool=${1:-build/tqai}
passed=0
failed=0

tmp=${TMPDIR:-/tmp}/test_cli.$$
mkdir "$tmp" || { echo "test_cli: cannot create $tmp"; echo "test_cli: 0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

out=$tmp/stdout
err=$tmp/stderr

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $1"
  [ -n "$2" ] && printf '%s\n' "$2" | sed 's/^/#   /'
  return 0
}

# check DESCRIPTION COMMAND...: passes if COMMAND succeeds.
check() {
  desc=$1
  shift
  if "$@"; then
    ok "$desc"
  else
    not_ok "$desc" "$(cat "$out" "$err")"
  fi
}

# run ARGS...: runs the tool, stdout to $out, stderr to $err, status in $rc.
run() {
  "$tool" "$@" >"$out" 2>"$err"
  rc=$?
}

# expect_ok DESCRIPTION ARGS...: exit status 0 and something on stdout.
expect_ok() {
  desc=$1
  shift
  run "$@"
  if [ "$rc" -eq 0 ] && [ -s "$out" ]; then
    ok "$desc"
  else
    not_ok "$desc (exit $rc)" "$(cat "$err")"
  fi
}

# expect_fail DESCRIPTION STATUS ARGS...: exit status STATUS (or any non-zero
# status for "nonzero"), nothing on stdout, a message naming tqai on stderr.
expect_fail() {
  desc=$1
  want=$2
  shift 2
  run "$@"
  if [ "$want" = nonzero ]; then
    [ "$rc" -ne 0 ] && status_ok=1 || status_ok=0
  else
    [ "$rc" -eq "$want" ] && status_ok=1 || status_ok=0
  fi
  if [ "$status_ok" -eq 1 ] && [ ! -s "$out" ] && grep -q 'tqai' "$err"; then
    ok "$desc (exit $rc: $(head -n 1 "$err"))"
  else
    not_ok "$desc (exit $rc, wanted $want)" "$(cat "$out" "$err")"
  fi
}

have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1

# json_check DESCRIPTION PYTHON-EXPRESSION: the expression, with d the parsed
# JSON of $out, must be true.
json_check() {
  if [ "$have_python" -eq 0 ]; then
    ok "$1 # skip: no python3"
    return
  fi
  if msg=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if not (eval(sys.argv[2])):
    print("false: " + sys.argv[2])
    sys.exit(1)
' "$out" "$2" 2>&1); then
    ok "$1"
  else
    not_ok "$1" "$msg"
  fi
}

if [ ! -x "$tool" ]; then
  not_ok "tool $tool exists and is executable"
  echo "test_cli: $passed passed, $failed failed"
  exit 1
fi

# --- help texts -----------------------------------------------------------
expect_ok "tqai --help" --help
check "--help lists benchmark" grep -q 'benchmark' "$out"
check "--help lists info" grep -q 'info' "$out"
expect_ok "tqai -h" -h
expect_ok "tqai --version" --version
check "--version prints a version number" grep -Eq '[0-9]+\.[0-9]+\.[0-9]+' "$out"
expect_ok "tqai help" help
for cmd in info benchmark; do
  expect_ok "tqai $cmd --help" "$cmd" --help
  check "tqai $cmd --help shows the usage line" grep -q "Usage: tqai $cmd" "$out"
  expect_ok "tqai help $cmd" help "$cmd"
done
run benchmark --help
for opt in --bits-k --bits-v --head-dim --n-vectors --seed --codec-seed --rotation \
           --codebook --norm --simd --json --quiet; do
  check "benchmark --help documents $opt" grep -q -- "$opt" "$out"
done

# --- info -----------------------------------------------------------------
expect_ok "tqai info" info
version=$("$tool" --version | sed -E 's/^tqai ([0-9]+\.[0-9]+\.[0-9]+).*/\1/')
check "info mentions version $version" grep -qF "$version" "$out"
check "info reports CUDA" grep -qi 'cuda' "$out"
check "info reports SIMD levels" grep -q 'scalar' "$out"
expect_ok "tqai info --json" info --json
json_check "info --json is valid JSON with the version" \
  'd["version"] == "'"$version"'" and d["limits"]["max_bits"] == 8'
json_check "info --json: scalar level always supported" 'd["simd"]["levels"]["scalar"] is True'

# --- benchmark ------------------------------------------------------------
expect_ok "benchmark --n-vectors 2000" benchmark --n-vectors 2000
check "benchmark table shows NMSE" grep -q 'NMSE' "$out"
check "benchmark table shows 5.12x compression" grep -qF '5.12x' "$out"
expect_ok "benchmark --json --n-vectors 2000" benchmark --json --n-vectors 2000
json_check "benchmark --json is valid JSON" 'isinstance(d, dict)'
json_check "K4 NMSE in [0.0085, 0.0105]" '0.0085 <= d["key"]["nmse"] <= 0.0105'
json_check "V2 NMSE in [0.105, 0.13]" '0.105 <= d["value"]["nmse"] <= 0.13'
json_check "100 bytes per token per KV head at d=128" \
  'd["bytes_per_token_per_kv_head"] == 100 and d["fp16_bytes_per_token_per_kv_head"] == 512'
json_check "compression 5.12x" 'abs(d["compression_ratio"] - 5.12) < 1e-9'
json_check "K4 NMSE below the paper upper bound" \
  'd["key"]["nmse"] < d["key"]["distortion_upper_bound"]'
json_check "cosine statistics ordered (min <= p5 <= mean <= 1)" \
  'all(d[c]["cosine_min"] <= d[c]["cosine_p5"] <= d[c]["cosine_mean"] <= 1 for c in ("key", "value"))'
expect_ok "benchmark hadamard, d=64, K3/V3, gaussian codebook, f32 norm" \
  benchmark --json --n-vectors 1000 --head-dim 64 --bits-k 3 --bits-v 3 \
  --rotation hadamard --codebook gaussian --norm f32 --simd scalar --codec-seed 0x1234
json_check "  its record sizes: 4 + 24 bytes" \
  'd["key"]["record_bytes"] == 28 and d["value"]["record_bytes"] == 28 and d["params"]["simd"] == "scalar"'
expect_ok "benchmark --n-vectors=1 (smallest run, = form)" benchmark --n-vectors=1 --quiet

# --- bad command lines ----------------------------------------------------
expect_fail "no command" 2
expect_fail "unknown command" 2 frobnicate
expect_fail "unknown global option" 2 --frobnicate
expect_fail "help for an unknown command" 2 help frobnicate
expect_fail "unknown option" 2 benchmark --frobnicate
expect_fail "unknown info option" 2 info --frobnicate
expect_fail "unexpected argument" 2 benchmark extra
expect_fail "--bits-k 9" 2 benchmark --bits-k 9
check "  message names the option, range and value" \
  grep -qF -- "--bits-k expects an integer in 1..8, got '9'" "$err"
expect_fail "--bits-k abc" 2 benchmark --bits-k abc
expect_fail "--bits-k 0" 2 benchmark --bits-k 0
expect_fail "--bits-k -4" 2 benchmark --bits-k -4
expect_fail "--bits-k ' 4'" 2 benchmark --bits-k ' 4'
expect_fail "--bits-k 4x" 2 benchmark --bits-k 4x
expect_fail "--bits-v ''" 2 benchmark --bits-v ''
expect_fail "--head-dim 1" 2 benchmark --head-dim 1
expect_fail "--head-dim 4096" 2 benchmark --head-dim 4096
expect_fail "--head-dim 100 --rotation hadamard" nonzero benchmark --head-dim 100 --rotation hadamard --n-vectors 10
expect_fail "--n-vectors 0" 2 benchmark --n-vectors 0
expect_fail "missing value" 2 benchmark --bits-k
expect_fail "--n-vectors 99999999999999999999999 (overflow)" 2 benchmark --n-vectors 99999999999999999999999
expect_fail "--n-vectors 18446744073709551616 (2^64)" 2 benchmark --n-vectors 18446744073709551616
expect_fail "--seed 0x (no digits)" 2 benchmark --seed 0x
expect_fail "--rotation foo" 2 benchmark --rotation foo
expect_fail "--simd foo" 2 benchmark --simd foo
expect_fail "--json=1 (flag with a value)" 2 benchmark --json=1

# The model commands, on the committed random-weight llama fixture (its text
# is meaningless; these check the commands' plumbing, not the model).
model=tests/data/models/llama.gguf
if [ -f "$model" ]; then
  expect_ok "run --greedy -n 8" run -m "$model" --greedy -n 8 --raw "the license"
  check "run reports speed and cache size on stderr" grep -q 'KV cache (K4/V2)' "$err"
  expect_ok "run --chat --system, fp16 cache" run -m "$model" --chat --system "be brief" -n 4 --bits-k 16 --bits-v 16 hello
  expect_ok "run with every cache lever" run -m "$model" -n 6 --bits-k 3.5 --bits-v 2.5 --center --calib 4 --sinks 2 --window 3 --edge-layers 1 --edge-bits-k 8 --rotation hadamard hi
  expect_ok "compare --json" compare -m "$model" -n 6 --json "the license"
  check "compare --json is JSON with agreeing_tokens" sh -c "command -v python3 >/dev/null || exit 0; python3 -c 'import json,sys; d=json.load(sys.stdin); assert \"agreeing_tokens\" in d' <\"$out\""
  printf 'The GNU General Public License is a free, copyleft license for software and other kinds of works. %.0s' 1 2 3 4 5 6 7 8 >"$out.txt"
  expect_ok "perplexity --kl-divergence --json" perplexity -m "$model" -f "$out.txt" -c 32 --kl-divergence --json --quiet
  check "perplexity JSON has ppl and kld" sh -c "command -v python3 >/dev/null || exit 0; python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"ppl\"] > 1 and d[\"kld_mean\"] >= 0' <\"$out\""
  expect_ok "perplexity, fp16 against itself" perplexity -m "$model" -f "$out.txt" -c 32 --bits-k 16 --bits-v 16 --kl-divergence --json --quiet
  check "fp16 against itself: KL divergence exactly 0" grep -q '"kld_mean": 0[,}]' "$out"
  expect_ok "perplexity --kl-divergence, kept for --kl-base" perplexity -m "$model" -f "$out.txt" -c 32 --kl-divergence --json --quiet
  cp "$out" "$out.side"
  expect_ok "perplexity --kl-base-out (fp16 cache)" perplexity -m "$model" -f "$out.txt" -c 32 --bits-k 16 --bits-v 16 --kl-base-out "$out.base" --json --quiet
  expect_ok "perplexity --kl-base --kv-bytes-at 32" perplexity -m "$model" -f "$out.txt" -c 32 --kl-base "$out.base" --kv-bytes-at 32 --json --quiet
  check "--kl-base gives the KLD of running fp16 beside; --kv-bytes-at 32 counts what the run held" sh -c "command -v python3 >/dev/null || exit 0; python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); assert abs(a[\"kld_mean\"]-b[\"kld_mean\"]) <= 1e-5*a[\"kld_mean\"]+1e-9 and a[\"top1_agreement\"]==b[\"top1_agreement\"] and b[\"kv_bytes_at\"][\"32\"]==b[\"kv_bytes\"]' \"$out.side\" \"$out\""
  expect_fail "perplexity --kl-base saved with another -c" 1 perplexity -m "$model" -f "$out.txt" -c 16 --kl-base "$out.base"
  expect_fail "perplexity --kl-base with --kl-divergence" 2 perplexity -m "$model" -f "$out.txt" -c 32 --kl-base "$out.base" --kl-divergence
  # A baseline whose last log-probability is damaged (made positive): refused.
  head -c -4 "$out.base" >"$out.bad" && printf '\000\000\200\077' >>"$out.bad"
  expect_fail "perplexity --kl-base with a damaged log-probability" 1 perplexity -m "$model" -f "$out.txt" -c 32 --kl-base "$out.bad"
  head -c -4 "$out.base" >"$out.bad"
  expect_fail "perplexity --kl-base cut short" 1 perplexity -m "$model" -f "$out.txt" -c 32 --kl-base "$out.bad"
  rm -f "$out.side" "$out.base"
  rm -f "$out.txt"
  expect_fail "run without a prompt" 2 run -m "$model"
  # Without -m the tool takes $TQAI_MODEL, else the shipped model.
  TQAI_MODEL=tests/data/models/nonexistent.gguf
  export TQAI_MODEL
  expect_fail "run without -m, TQAI_MODEL naming a missing file" 1 run hello
  unset TQAI_MODEL
  expect_fail "run with a missing model file" 1 run -m tests/data/models/nonexistent.gguf hello
  expect_fail "run with a tokenizer-only file" 1 run -m tests/data/tokenizer/spm.gguf hello
  expect_fail "--bits-k 16 with --bits-v 2" 2 run -m "$model" --bits-k 16 --bits-v 2 hello
  expect_fail "--bits-k 2.25" 2 run -m "$model" --bits-k 2.25 hello
  expect_fail "perplexity without -f" 2 perplexity -m "$model"
  expect_fail "perplexity, text shorter than a window" 1 perplexity -m "$model" -f tests/data/hf/llama_tiny/config.json -c 4096
fi

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && exit 0
exit 1
