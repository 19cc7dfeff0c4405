#!/usr/bin/env bash
# hfrun estimate-memory against the peak resident memory of the same runs, as /usr/bin/time -f %M
# reports it (the largest process of the job: the biggest rank), over configs that move memory
# in different ways: logits-heavy GPT-2, bf16 with activation checkpointing (GPT-2 and Llama),
# ZeRO-3 on 2 ranks, tensor parallelism, LoRA with ZeRO-3, a long-sequence Llama, sequence
# classification on padded records. Each must be within 25% (measured / estimate in [0.75, 1.25]); the table is
# printed for the README. Then: config.json alone is enough (no weights), a 70B config answers
# without allocating, --memory-gb says what to change, and bad input exits 2.
# Usage: test_estimate_memory.sh PATH/TO/hfrun
set -uo pipefail
HFRUN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
PY=/usr/bin/python3
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=1
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() {
  fail=$((fail + 1))
  echo "FAIL: $*"
}

# Token shards (llm.c layout) of random ids: no tokenizer needed, any vocabulary size.
"$PY" - "$TMP" <<'EOF'
import random, struct, sys
random.seed(3)
for v in (1000, 50257):
    n = 60000
    with open(f"{sys.argv[1]}/v{v}.bin", "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack(f"<{n}H", *[random.randrange(v) for _ in range(n)]))
# Records for sequence classification: texts of varied length (padded batches).
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
with open(f"{sys.argv[1]}/cls.jsonl", "w") as f:
    for i in range(200):
        text = " ".join(random.choice(words) for _ in range(random.randrange(3, 40)))
        f.write('{"text": "%s", "label": %d}\n' % (text, i % 3))
# A word-level tokenizer.json for the records (HF's WordLevel model with [CLS]/[SEP]).
import json
vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
for w in words:
    vocab[w] = len(vocab)
tok = {"version": "1.0", "truncation": None, "padding": None,
       "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                         "rstrip": False, "normalized": False, "special": True}
                        for t, i in list(vocab.items())[:4]],
       "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
       "post_processor": {"type": "TemplateProcessing",
                          "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                     {"Sequence": {"id": "A", "type_id": 0}},
                                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                          "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                   {"Sequence": {"id": "A", "type_id": 0}},
                                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                                   {"Sequence": {"id": "B", "type_id": 1}},
                                   {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                          "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                                             "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
       "decoder": None,
       "model": {"type": "WordPiece", "vocab": vocab, "unk_token": "[UNK]",
                 "continuing_subword_prefix": "##", "max_input_chars_per_word": 100}}
json.dump(tok, open(f"{sys.argv[1]}/tokenizer.json", "w"))
EOF

gpt2='{n_layer: 4, n_head: 4, n_embd: 128, n_positions: 256, vocab_size: 50257}'
llama='{hidden_size: 128, intermediate_size: 384, num_hidden_layers: 4, num_attention_heads: 4,
  num_key_value_heads: 2, max_position_embeddings: 512, vocab_size: 1000}'
write_config() {  # write_config FILE ARCH MODEL_CONFIG DATA SEQ_LEN MICRO_BATCH [EXTRA_YAML]
  cat > "$1" <<EOF
output_dir: $TMP/run
seed: 5
model:
  arch: $2
  config: $3
data:
  train: [$4]
  seq_len: $5
train:
  micro_batch_size: $6
  max_steps: 4
  log_every: 1
optimizer: {type: adamw, lr: 1.0e-4}
checkpoint: {every: 2, keep: 1}
${7:-}
EOF
}
write_config "$TMP/gpt2.yaml" gpt2 "$gpt2" "$TMP/v50257.bin" 64 8
write_config "$TMP/llama.yaml" llama "$llama" "$TMP/v1000.bin" 256 4
write_config "$TMP/bert.yaml" bert '{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2,
  intermediate_size: 128, max_position_embeddings: 64, num_labels: 3}' "$TMP/cls.jsonl" 48 16 \
  "task: sequence_classification
tokenizer: $TMP/tokenizer.json"

table="| config | ranks | estimate (MiB) | measured peak (MiB) | measured / estimate |
| --- | --- | --- | --- | --- |"
compare() {  # compare NAME CONFIG NP [--set ...]
  local name="$1" cfg="$2" np="$3"
  shift 3
  rm -rf "$TMP/run"
  local json est measured
  json="$("$HFRUN" estimate-memory "$cfg" -np "$np" "$@")" || { bad "$name: estimate-memory failed"; return; }
  est="$(grep -o '"total_bytes": [0-9]*' <<<"$json" | grep -o '[0-9]*$')"
  if ! /usr/bin/time -f %M -o "$TMP/time" "$HFRUN" -np "$np" "$cfg" "$@" > "$TMP/log" 2>&1; then
    bad "$name: training failed"
    tail -5 "$TMP/log"
    return
  fi
  measured=$(($(tail -1 "$TMP/time") * 1024))
  local row
  row="$("$PY" -c "
e, m = $est, $measured
r = m / e
print('| %s | %d | %.1f | %.1f | %.2f |' % ('$name', $np, e / 2**20, m / 2**20, r))
print('ok' if 0.75 <= r <= 1.25 else 'off')")"
  table+=$'\n'"$(head -1 <<<"$row")"
  if [ "$(tail -1 <<<"$row")" = ok ]; then ok; else bad "$name: $(head -1 <<<"$row")"; fi
}

compare "GPT-2 f32" "$TMP/gpt2.yaml" 1
compare "GPT-2 bf16 + activation checkpointing" "$TMP/gpt2.yaml" 1 \
  --set train.mixed_precision=bf16 --set train.activation_checkpointing=true
compare "GPT-2 ZeRO-3" "$TMP/gpt2.yaml" 2 --set distributed.zero_stage=3
compare "GPT-2 tensor parallel 2" "$TMP/gpt2.yaml" 2 --set distributed.tensor_parallel=2
compare "Llama T=256" "$TMP/llama.yaml" 1
compare "Llama T=256 bf16 + activation checkpointing" "$TMP/llama.yaml" 1 \
  --set train.mixed_precision=bf16 --set train.activation_checkpointing=true
compare "Llama LoRA all-linear, ZeRO-3" "$TMP/llama.yaml" 2 --set peft.type=lora \
  --set 'peft.target_modules=[all-linear]' --set distributed.zero_stage=3
compare "BERT classification (padded records)" "$TMP/bert.yaml" 1
echo "$table"

# config.json is enough: a pretrained directory without weights.
mkdir -p "$TMP/noweights"
cat > "$TMP/noweights/config.json" <<'EOF'
{"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
 "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
 "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0}
EOF
cat > "$TMP/big.yaml" <<EOF
output_dir: $TMP/big
model: {from_pretrained: $TMP/noweights}
data: {train: [$TMP/v1000.bin], seq_len: 2048}
train: {micro_batch_size: 1, mixed_precision: bf16, activation_checkpointing: true}
distributed: {zero_stage: 3}
EOF
if out="$(/usr/bin/time -f %M -o "$TMP/time" "$HFRUN" estimate-memory "$TMP/big.yaml" -np 64 2>&1)"; then
  ok
  # 70.6B parameters; ZeRO-3 over 64 ranks: ~16 bytes x 70.6B / 64 of state per rank.
  "$PY" - "$out" "$(tail -1 "$TMP/time")" <<'EOF' && ok || bad "70B estimate: $out"
import json, sys
d = json.loads(sys.argv[1])
assert abs(d["parameters"] - 70553706496) < 1e6, d["parameters"]
r = d["per_rank"][0]
state = r["parameters_bytes"] + r["gradients_bytes"] + r["optimizer_bytes"]
assert 16 * 70.55e9 / 64 <= state <= 16 * 70.55e9 / 64 + 30e9, state
assert d["total_bytes"] >= state
assert int(sys.argv[2]) < 200 * 1024, "estimate-memory allocated: peak %s KiB" % sys.argv[2]
EOF
else
  bad "70B estimate: $out"
fi

# --memory-gb: too small says what fits; large enough says it fits.
out="$("$HFRUN" estimate-memory "$TMP/gpt2.yaml" -np 2 --memory-gb 0.25 2>&1)"
"$PY" -c "
import json, sys
d = json.loads(sys.argv[1])
assert d['fits'] is False and d['suggestion'] and d['suggestion_total_bytes'] <= 0.25 * 2**30, d
" "$out" && ok || bad "--memory-gb 0.25: $out"
out="$("$HFRUN" estimate-memory "$TMP/gpt2.yaml" --memory-gb 64 2>&1)"
grep -q '"fits": true' <<<"$out" && ok || bad "--memory-gb 64: $out"

# Bad input: exit 2 naming what is wrong.
expect2() {  # expect2 NAME NEEDLE COMMAND...
  local name="$1" needle="$2"
  shift 2
  out="$("$@" 2>&1)"
  local rc=$?
  if [ "$rc" -eq 2 ] && grep -q -- "$needle" <<<"$out"; then ok; else bad "$name: exit $rc: $out"; fi
}
expect2 "missing config" "nope.yaml" "$HFRUN" estimate-memory "$TMP/nope.yaml"
expect2 "-np 0" "-np" "$HFRUN" estimate-memory "$TMP/gpt2.yaml" -np 0
expect2 "tensor_parallel 3 of 2" "tensor_parallel" "$HFRUN" estimate-memory "$TMP/gpt2.yaml" -np 2 \
  --set distributed.tensor_parallel=3
expect2 "bad key" "train.micro_batch" "$HFRUN" estimate-memory "$TMP/gpt2.yaml" --set train.micro_batch=3

echo "estimate_memory: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
