#!/usr/bin/env bash
# End-to-end checks of the hfrun executable: exit codes, --version, env, bench JSON output.
# Usage: test_cli.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

check() {  # check NAME EXPECTED_RC COMMAND... ; output in $out
  local name="$1" want="$2"
  shift 2
  out="$("$@" 2>&1)"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $name: exit $rc, expected $want"
    echo "$out" | head -20
  fi
}

contains() {  # contains NAME NEEDLE
  if grep -qE -- "$2" <<<"$out"; then pass=$((pass + 1)); else
    fail=$((fail + 1))
    echo "FAIL: $1: output lacks /$2/"
    echo "$out" | head -20
  fi
}

check "version" 0 "$HFRUN" --version
contains "version" '^hfrun [0-9]+\.[0-9]+\.[0-9]+$'
check "help" 0 "$HFRUN" --help
contains "help" 'bench matmul'
check "no args is usage error" 2 "$HFRUN"
check "unknown command" 2 "$HFRUN" frobnicate
contains "unknown command" "unknown command 'frobnicate'"
check "env" 0 "$HFRUN" env
contains "env" 'onednn: +[0-9]+\.[0-9]+'
contains "env" 'cpu isa: +[a-z0-9_]+'
check "bench matmul f32" 0 "$HFRUN" bench matmul --m 64 --n 48 --k 32 --dtype f32 --baseline --min-seconds 0.05
contains "bench matmul f32" '^\{.*"gflops": ?[0-9.]+.*"baseline_gflops": ?[0-9.]+.*\}$'
check "bench matmul bf16" 0 "$HFRUN" bench matmul --m 64 --n 64 --k 64 --dtype bf16 --min-seconds 0.05
contains "bench matmul bf16" '"dtype": ?"bf16"'
check "bench matmul bad dtype" 2 "$HFRUN" bench matmul --dtype f64
contains "bench matmul bad dtype" "f64"
check "bench matmul bad size" 2 "$HFRUN" bench matmul --m 0
check "bench matmul unknown option" 2 "$HFRUN" bench matmul --mm 3
check "bench matmul help" 0 "$HFRUN" bench matmul --help
check "bench block" 0 "$HFRUN" bench block --batch 1 --seq 16 --dim 64 --heads 4 --iters 2
contains "bench block" '"outside_matmul_fraction": ?[0-9.]+'
check "bench block bad heads" 2 "$HFRUN" bench block --dim 64 --heads 5
check "bench unknown" 2 "$HFRUN" bench nothing

# tokenize / decode with the real GPT-2 tokenizer (ids as Hugging Face gives them).
printf 'Hello world!\n<|endoftext|> caf\xc3\xa9\n' > "$TMP/in.txt"
check "tokenize" 0 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/in.txt"
contains "tokenize" '^\[15496,995,0\]$'
contains "tokenize" '^\[50256,40304\]$'
check "tokenize stdin" 0 sh -c "printf 'Hello world!' | '$HFRUN' tokenize --tokenizer '$GPT2'"
contains "tokenize stdin" '^\[15496,995,0\]$'
check "tokenize whole" 0 "$HFRUN" tokenize --tokenizer "$GPT2" --whole "$TMP/in.txt"
contains "tokenize whole" '^\[15496,995,0,198,50256,40304,198\]$'
printf '[15496,995,0]\n[50256, 40304]\n' > "$TMP/ids.txt"
check "decode" 0 "$HFRUN" tokenize --tokenizer "$GPT2" --decode "$TMP/ids.txt"
contains "decode" '^Hello world!$'
contains "decode" '^<\|endoftext\|> caf'
printf '[1, x]\n' > "$TMP/bad_ids.txt"
check "decode bad line" 2 "$HFRUN" tokenize --tokenizer "$GPT2" --decode "$TMP/bad_ids.txt"
contains "decode bad line" 'bad_ids.txt:1'
printf 'ok\nbad \xff\n' > "$TMP/bad_utf8.txt"
check "tokenize invalid utf8" 2 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/bad_utf8.txt"
contains "tokenize invalid utf8" 'bad_utf8.txt:2.*UTF-8'
check "tokenize missing tokenizer" 2 "$HFRUN" tokenize --tokenizer "$TMP/nope.json" "$TMP/in.txt"
contains "tokenize missing tokenizer" 'nope.json'
check "tokenize missing input" 2 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/nope.txt"
echo '{"model": {"type": "WordPiece"}}' > "$TMP/wp.json"
check "tokenize unsupported model" 2 "$HFRUN" tokenize --tokenizer "$TMP/wp.json" "$TMP/in.txt"
contains "tokenize unsupported model" 'WordPiece'

# prepare: shards, summary, and errors with file:line.
printf '{"text": "one"}\n{"text": "two"}\n' > "$TMP/docs.jsonl"
check "prepare" 0 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/shards" "$TMP/in.txt" "$TMP/docs.jsonl"
contains "prepare" '^prepared 3 documents, [0-9]+ tokens .* 1 shard\(s\) of uint16'
[ -f "$TMP/shards/shard_000000.bin" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: no shard written"; }
check "prepare again needs overwrite" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/shards" "$TMP/in.txt"
contains "prepare again needs overwrite" 'overwrite'
printf '{"text": "ok"}\nnot json\n' > "$TMP/bad.jsonl"
check "prepare bad jsonl" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/s2" "$TMP/bad.jsonl"
contains "prepare bad jsonl" 'bad.jsonl:2'
check "prepare no inputs" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/s3"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
