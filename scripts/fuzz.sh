#!/usr/bin/env bash
# Fuzzes hfrun's parsers of untrusted input with libFuzzer (clang, ASan + UBSan): builds
# build-fuzz/ (HFRUN_FUZZ=ON), seeds each target's corpus from generated examples of its format
# (and the repo's examples/*.yaml), and runs it for SECONDS. Any crash, leak, UB report,
# uncaught non-hfrun exception, 10 s timeout or allocation over 2 GB fails (exit 1); the
# reproducer is left in build-fuzz/findings/TARGET/ (replay: build-fuzz/fuzz/TARGET FILE).
#   bash scripts/fuzz.sh TARGET|all [SECONDS]      (default 30 s per target)
# Targets: tokenizer safetensors train_yaml model_config records token_shard checkpoint_json
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(tokenizer safetensors train_yaml model_config records token_shard checkpoint_json)
WHICH="${1:-all}"
SECONDS_EACH="${2:-30}"
BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
if [ "$WHICH" = all ]; then selected=("${TARGETS[@]}"); else selected=("$WHICH"); fi
for t in "${selected[@]}"; do
  [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (${TARGETS[*]})" >&2; exit 2; }
done
command -v clang++ > /dev/null || { echo "fuzz.sh: needs clang++ (scripts/install-deps.sh)" >&2; exit 2; }

CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHFRUN_FUZZ=ON \
  -DHFRUN_CUDA=OFF > /dev/null
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "${selected[@]/#/fuzz_}"

SEEDS="$BUILD_DIR/seeds"
/usr/bin/python3 - "$SEEDS" <<'EOF'
import json, os, struct, sys
root = sys.argv[1]
def put(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
# tokenizer: "TEXT\n" + tokenizer.json: byte-level BPE with a Split regex, and WordPiece + BERT.
bpe = {"version": "1.0", "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": True,
       "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}],
       "normalizer": {"type": "NFC"},
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Split", "pattern": {"Regex": "'s|'t| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+"},
            "behavior": "Isolated", "invert": False},
           {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
       "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
       "decoder": {"type": "ByteLevel"},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "byte_fallback": False,
                 "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4},
                 "merges": ["a b", "\u0120 ab"]}}
put("tokenizer", "bpe", "ab ab, a b!\n" + json.dumps(bpe))
wp = {"version": "1.0", "added_tokens": [], "normalizer": {"type": "BertNormalizer",
      "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
          "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
          "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "hello": 3, "##lo": 4, "world": 5}}}
put("tokenizer", "wordpiece", "Hello world\n" + json.dumps(wp))
uni = {"version": "1.0", "added_tokens": [], "normalizer": {"type": "Sequence", "normalizers": [
       {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
       "post_processor": None, "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
       "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": True,
                 "vocab": [["<unk>", 0.0], ["\u2581a", -1.0], ["b", -2.0], ["<0x41>", -5.0]]}}
put("tokenizer", "unigram", "a b A\n" + json.dumps(uni))
# safetensors: a header and two tensors.
def safetensors(tensors, meta=None):
    header, data = {}, b""
    if meta: header["__metadata__"] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "two", safetensors({"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                        "b": ("BF16", [3], b"\x80\x3f" * 3)}, {"format": "pt"}))
put("safetensors", "empty", safetensors({}))
# ... and sharded checkpoints' index.json (the target's two fixed shards hold w, b and v).
put("safetensors", "index", json.dumps({"metadata": {"total_size": 24},
                                        "weight_map": {"w": "a.safetensors", "b": "a.safetensors",
                                                       "v": "b.safetensors"}}))
# train.yaml: the repo's examples, and one with overrides.
for f in sorted(os.listdir("examples")):
    if f.endswith(".yaml"):
        put("train_yaml", f, open(os.path.join("examples", f)).read())
put("train_yaml", "sets", "output_dir: x\nmodel: {arch: llama}\n--set train.max_steps=3\n--set peft.type=lora\n")
# config.json: first byte the task.
for name, cfg in {
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 10},
    "llama": {"model_type": "llama", "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "qwen3": {"model_type": "qwen3", "hidden_size": 8, "head_dim": 4, "num_hidden_layers": 1,
              "num_attention_heads": 2, "vocab_size": 10, "tie_word_embeddings": True},
    "bert": {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 12, "vocab_size": 10, "id2label": {"0": "no", "1": "yes"}}}.items():
    for task in range(3):
        put("model_config", f"{name}{task}", bytes([task]) + json.dumps(cfg).encode())
# records: first byte the format.
put("records", "jsonl", b"\0" + b'{"text": "a", "label": 1}\n{"prompt": "p", "completion": "c"}\n')
put("records", "csv", b"\1" + b'text,label\n"a, b",1\nc,0\n')
put("records", "tsv", b"\2" + b"text\tlabel\na\t1\n")
# token shards: uint16 and uint32.
for version, fmt in ((1, "H"), (2, "I")):
    toks = list(range(20))
    put("token_shard", f"v{version}", struct.pack("<256i", 20240520, version, len(toks), *[0] * 253)
        + struct.pack(f"<{len(toks)}{fmt}", *toks))
# checkpoint manifest (first byte even) and adapter_config.json (odd).
put("checkpoint_json", "manifest", b"\0" + json.dumps({"format": "hfrun-checkpoint", "version": 1,
    "step": 4, "world": 1, "config_hash": "ab", "files": [{"name": "trainer_state.json", "size": 10,
    "xxh3_128": "00" * 16}]}).encode())
put("checkpoint_json", "adapter", b"\1" + json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
    "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "modules_to_save": None,
    "use_rslora": False, "fan_in_fan_out": False}).encode())
EOF
cat > "$BUILD_DIR/json_yaml.dict" <<'EOF'
"{"
"}"
"["
"]"
":"
","
"\""
"null"
"true"
"false"
"1e999"
"-0"
"\\u0000"
"\\ud800"
"\x0a"
"- "
"--set "
"&a"
"*a"
"!!"
"type"
"vocab"
"merges"
"pattern"
"Regex"
"dtype"
"shape"
"data_offsets"
"__metadata__"
EOF

status=0
for t in "${selected[@]}"; do
  corpus="$BUILD_DIR/corpus/$t"
  findings="$BUILD_DIR/findings/$t"
  mkdir -p "$corpus" "$findings"
  echo "== fuzz_$t: ${SECONDS_EACH} s"
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$BUILD_DIR/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -max_len=16384 -dict="$BUILD_DIR/json_yaml.dict" \
      -artifact_prefix="$findings/" -print_final_stats=1 "$corpus" "$SEEDS/$t" \
      > "$BUILD_DIR/fuzz_$t.log" 2>&1; then
    status=1
    echo "FAIL: fuzz_$t found a problem (reproducer in $findings/):"
    grep -E "ERROR|runtime error|SUMMARY|uncaught|deadly|Test unit written" "$BUILD_DIR/fuzz_$t.log" | head -12
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$BUILD_DIR/fuzz_$t.log" |
    tr '\n' ' ' | sed 's/stat:://g'
  echo
done
exit $status
