#!/bin/sh
# test_convert.sh - checks "tqai convert" end to end on the committed Hugging
# Face checkpoint tests/data/hf/llama_tiny (made by
# tools/fixtures/make_model_fixtures.py: the llama3 fixture's model, saved in
# bfloat16): the conversion loads and gives transformers' logits, and is byte
# for byte the committed tests/data/models/llama3.gguf; then malformed inputs
# and bad command lines, which must fail with exit status 1 (2 for the command
# line), a message on stderr, and no output file (nor a temporary one) left.
# Usage: sh tests/test_convert.sh build/tqai [build/tests/test_model]
# Prints "ok - ..." or "not ok - ..." per check and ends with
# "test_convert: N passed, N failed"; exits 1 if any check failed.

tool=${1:-build/tqai}
test_model=${2:-$(dirname "$tool")/tests/test_model}
hf=tests/data/hf/llama_tiny
ref=tests/data/models/llama3
passed=0
failed=0

tmp=${TMPDIR:-/tmp}/test_convert.$$
mkdir "$tmp" || { echo "test_convert: cannot create $tmp"; echo "test_convert: 0 passed, 1 failed"; exit 1; }
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
skip() { echo "ok - $1 # SKIP $2"; }

# run ARGS...: runs the tool, stdout to $out, stderr to $err, status in $rc.
run() {
  "$tool" "$@" >"$out" 2>"$err"
  rc=$?
}

# A fresh copy of the checkpoint in $tmp/NAME; prints its path.
copy_hf() {
  rm -rf "${tmp:?}/$1"
  mkdir "$tmp/$1" && cp "$hf"/* "$tmp/$1/" && chmod u+w "$tmp/$1"/*
  echo "$tmp/$1"
}

# expect_fail DESCRIPTION STATUS PATTERN DIR [OPTIONS...]: converting DIR to
# $tmp/o.gguf exits with STATUS, stderr names "tqai convert" and matches
# PATTERN (grep -E), stdout is empty and no output file is left behind.
expect_fail() {
  desc=$1 want=$2 pattern=$3 dir=$4
  shift 4
  rm -f "$tmp"/o.gguf*
  run convert "$dir" -o "$tmp/o.gguf" --quiet "$@"
  left=$(ls "$tmp" | grep '^o\.gguf' || true)
  if [ "$rc" -ne "$want" ]; then
    not_ok "$desc (exit $rc, expected $want)" "$(cat "$err")"
  elif ! grep -q '^tqai convert: ' "$err" || ! grep -Eq "$pattern" "$err"; then
    not_ok "$desc (message)" "$(cat "$err")"
  elif [ -s "$out" ]; then
    not_ok "$desc (stdout not empty)" "$(cat "$out")"
  elif [ -n "$left" ]; then
    not_ok "$desc (left $left behind)"
  else
    ok "$desc"
  fi
}

# json_edit FILE PYTHON_EXPR: rewrites a JSON file as d -> EXPR (python3).
have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1

# ---------------------------------------------------------------- success

run convert "$hf" -o "$tmp/llama.gguf" --type f32 --name llama3
if [ "$rc" -eq 0 ] && [ -s "$tmp/llama.gguf" ] && [ ! -s "$out" ] && grep -q 'loads as llama' "$err"; then
  ok "convert $hf (f32)"
else
  not_ok "convert $hf (f32) (exit $rc)" "$(cat "$err")"
fi
if cmp -s "$tmp/llama.gguf" "$ref.gguf"; then
  ok "the conversion is byte for byte $ref.gguf"
else
  not_ok "the conversion differs from $ref.gguf (regenerate the fixtures with tools/fixtures/make_model_fixtures.py if the converter changed on purpose)"
fi
if [ -x "$test_model" ]; then
  if "$test_model" --compare "$tmp/llama.gguf" "$ref.logits" >"$out" 2>"$err"; then
    ok "the converted model gives transformers' logits ($(cat "$out"))"
  else
    not_ok "the converted model's logits" "$(cat "$out" "$err")"
  fi
else
  skip "the converted model gives transformers' logits" "no $test_model"
fi
run convert "$hf" -o "$tmp/llama_q8.gguf" --type q8_0 --quiet
if [ "$rc" -eq 0 ] && [ ! -s "$err" ] && [ ! -s "$out" ]; then
  ok "convert --type q8_0 --quiet: silent"
else
  not_ok "convert --type q8_0 --quiet (exit $rc)" "$(cat "$err" "$out")"
fi
if [ -x "$test_model" ]; then
  if "$test_model" --compare "$tmp/llama_q8.gguf" "$ref.logits" 0.15 >"$out" 2>"$err"; then
    ok "q8_0 conversion within 0.15 of transformers' logits ($(cat "$out"))"
  else
    not_ok "q8_0 conversion's logits" "$(cat "$out" "$err")"
  fi
fi
run convert "$hf" -o "$tmp/llama_q4.gguf" --type q4_0
if [ "$rc" -eq 0 ] && grep -q 'q4_0' "$err"; then
  ok "convert --type q4_0"
else
  not_ok "convert --type q4_0 (exit $rc)" "$(cat "$err")"
fi
# Converting onto an existing file replaces it.
run convert "$hf" -o "$tmp/llama_q4.gguf" --type f16 --quiet
if [ "$rc" -eq 0 ] && [ -z "$(ls "$tmp" | grep 'llama_q4.gguf.tmp' || true)" ]; then
  ok "convert over an existing file"
else
  not_ok "convert over an existing file (exit $rc)" "$(cat "$err")"
fi

# ---------------------------------------------------------------- command line

run convert --help
if [ "$rc" -eq 0 ] && grep -q 'Usage: tqai convert' "$out"; then ok "convert --help"; else not_ok "convert --help (exit $rc)"; fi
run help convert
if [ "$rc" -eq 0 ] && grep -q -- '--type' "$out"; then ok "help convert"; else not_ok "help convert (exit $rc)"; fi
for args in "" "$hf" "-o $tmp/x.gguf" "$hf -o $tmp/x.gguf --type q5_0" "$hf -o $tmp/x.gguf --bogus" \
             "$hf $hf -o $tmp/x.gguf" "$hf -o"; do
  # shellcheck disable=SC2086
  run convert $args
  if [ "$rc" -eq 2 ] && grep -q "Try 'tqai convert --help'" "$err" && [ ! -e "$tmp/x.gguf" ]; then
    ok "usage error: convert $args"
  else
    not_ok "usage error: convert $args (exit $rc)" "$(cat "$err")"
  fi
done

# ---------------------------------------------------------------- bad input

: >"$tmp/plainfile"

d=$(copy_hf truncated)
head -c 4 "$hf/model.safetensors" >"$d/model.safetensors"
expect_fail "safetensors shorter than its length field" 1 'too short' "$d"
head -c 200 "$hf/model.safetensors" >"$d/model.safetensors"
expect_fail "safetensors header cut short" 1 'header length .* does not fit' "$d"
head -c 100000 "$hf/model.safetensors" >"$d/model.safetensors"
expect_fail "safetensors data cut short" 1 "data_offsets .* outside" "$d"

d=$(copy_hf badheader)
printf 'X' | dd of="$d/model.safetensors" bs=1 seek=8 conv=notrunc 2>/dev/null
expect_fail "safetensors header that is not JSON" 1 'header: invalid JSON' "$d"

d=$(copy_hf huge_len)
printf '\377\377\377\377\377\377\377\177' | dd of="$d/model.safetensors" bs=1 seek=0 conv=notrunc 2>/dev/null
expect_fail "safetensors header length near 2^63" 1 'header length' "$d"

d=$(copy_hf badjson)
printf '{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,,}' >"$d/config.json"
expect_fail "config.json that is not JSON" 1 'config.json: invalid JSON' "$d"
printf '[1, 2, 3]' >"$d/config.json"
expect_fail "config.json that is not an object" 1 'config.json: not a JSON object' "$d"
rm "$d/config.json"
expect_fail "no config.json" 1 'no config.json' "$d"

d=$(copy_hf notok)
rm "$d/tokenizer.json"
expect_fail "no tokenizer.json" 1 'no tokenizer.json' "$d"
printf '{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
  "added_tokens": [{"id": 99999, "content": "x"}]}' >"$d/tokenizer.json"
expect_fail "tokenizer.json with a token id beyond the vocabulary" 1 'token id 99999 is outside' "$d"
printf '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}' >"$d/tokenizer.json"
expect_fail "unsupported tokenizer model" 1 "tokenizer model 'WordPiece' is not supported" "$d"

# config.json as transformers writes it: one field per line.
d=$(copy_hf cfg0)
sed '/"hidden_size"/d' "$hf/config.json" >"$d/config.json"
expect_fail "config.json without hidden_size" 1 "field 'hidden_size' is missing" "$d"
sed 's/LlamaForCausalLM/GemmaForCausalLM/' "$hf/config.json" >"$d/config.json"
expect_fail "unsupported architecture" 1 "architecture 'GemmaForCausalLM' is not supported" "$d"

expect_fail "missing directory" 1 'does-not-exist: No such file or directory' "$tmp/does-not-exist"
expect_fail "a file for the directory" 1 'plainfile: not a directory' "$tmp/plainfile"
d=$(copy_hf noweights)
rm "$d/model.safetensors"
expect_fail "no *.safetensors" 1 'no \*\.safetensors' "$d"

# Unwritable outputs: a path under a regular file, and a directory.
rm -f "$tmp"/o.gguf*
run convert "$hf" -o "$tmp/plainfile/o.gguf" --quiet
if [ "$rc" -eq 1 ] && grep -q 'cannot write' "$err" && [ ! -e "$tmp/plainfile/o.gguf" ]; then
  ok "unwritable output"
else
  not_ok "unwritable output (exit $rc)" "$(cat "$err")"
fi
mkdir "$tmp/adir"
run convert "$hf" -o "$tmp/adir" --quiet
if [ "$rc" -eq 1 ] && grep -q 'is a directory' "$err" && [ -z "$(ls "$tmp/adir")" ]; then
  ok "output is a directory"
else
  not_ok "output is a directory (exit $rc)" "$(cat "$err")"
fi

if [ "$have_python" -eq 1 ]; then
  # cfg_edit DIR PYTHON_STATEMENTS: edits DIR/config.json as the dict c.
  cfg_edit() {
    python3 - "$1/config.json" "$2" <<'EOF'
import json, sys
p, code = sys.argv[1], sys.argv[2]
c = json.load(open(p))
exec(code)
json.dump(c, open(p, "w"))
EOF
  }
  # st_edit DIR PYTHON_STATEMENTS: edits the header of DIR/model.safetensors
  # as the dict h (the data stays as it is; the header is re-padded).
  st_edit() {
    python3 - "$1/model.safetensors" "$2" <<'EOF'
import json, struct, sys
p, code = sys.argv[1], sys.argv[2]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
exec(code)
hb = json.dumps(h).encode()
hb += b" " * ((-len(hb)) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
EOF
  }
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["num_hidden_layers"] = "2"'
  expect_fail "config.json with a string for an integer" 1 "field 'num_hidden_layers' must be an integer" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["num_attention_heads"] = -4'
  expect_fail "config.json with a negative head count" 1 "field 'num_attention_heads' = -4 is outside" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["rms_norm_eps"] = [1]'
  expect_fail "config.json with an array for a number" 1 "field 'rms_norm_eps' must be a number" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'del c["architectures"]'
  expect_fail "config.json without architectures" 1 "field 'architectures' is missing" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c.setdefault("rope_parameters", {})["rope_type"] = "yarn"'
  expect_fail "unsupported rope scaling" 1 "rope scaling 'yarn' is not supported" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["intermediate_size"] = 64'
  expect_fail "weights that do not match config.json" 1 "has shape \[96, 64\]; config.json implies \[64, 64\]" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["architectures"] = ["Qwen2ForCausalLM"]'
  expect_fail "a missing tensor (Qwen2 biases)" 1 "tensor 'model.layers.0.self_attn.q_proj.bias' is missing" "$d"
  d=$(copy_hf cfg)
  cfg_edit "$d" 'c["num_hidden_layers"] = 1'
  expect_fail "a tensor with no place" 1 "tensor 'model.layers.1.[a-z_.]*' .* has no place" "$d"

  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["dtype"] = "I16"'
  expect_fail "unsupported dtype" 1 "dtype I16; only F32, F16 and BF16" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["dtype"] = "Q4"'
  expect_fail "unknown dtype" 1 "unknown dtype 'Q4'" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["shape"] = [65]'
  expect_fail "data_offsets inconsistent with the shape" 1 "but its shape and dtype BF16 need 130" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["data_offsets"] = [0, 2**64 - 1]'
  expect_fail "data_offsets beyond the file" 1 "outside the [0-9]+ bytes of data" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["shape"] = [2**40, 2**40]'
  expect_fail "a shape that overflows" 1 "shape overflows" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"]["shape"] = [-64]'
  expect_fail "a negative dimension" 1 "shape\[0\] is not a non-negative integer" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["model.norm.weight"] = [1, 2]'
  expect_fail "a tensor entry that is not an object" 1 "entry is not a JSON object" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h["x"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
  expect_fail "an unexpected tensor" 1 "tensor 'x' .* has no place" "$d"
  d=$(copy_hf st)
  st_edit "$d" 'h = json.loads("[" * 200 + "]" * 200)'
  expect_fail "a header nested too deep" 1 "header: invalid JSON" "$d"
  d=$(copy_hf st)
  cp "$d/model.safetensors" "$d/model-2.safetensors"
  expect_fail "the same tensor in two files" 1 "also in another file" "$d"
  d=$(copy_hf nan)
  python3 - "$d/model.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
off = 8 + n + h["model.norm.weight"]["data_offsets"][0]
b[off:off + 2] = b"\xc0\x7f"  # a bfloat16 NaN
open(p, "wb").write(b)
EOF
  expect_fail "a NaN weight" 1 "model.norm.weight' contains NaN" "$d"
else
  skip "malformed config.json and safetensors headers" "no python3"
fi

echo "test_convert: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
