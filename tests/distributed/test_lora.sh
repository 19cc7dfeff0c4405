#!/usr/bin/env bash
# LoRA end to end through the hfrun executable: a tiny Llama base trained from scratch, then LoRA
# SFT on it with 1 process and with 2 ranks (DDP, ZeRO-2, ZeRO-3 with the frozen base sharded,
# tensor parallel 2; same global batch) logging the same losses; checkpoints hold the adapters only and resume exactly; final/ is a PEFT adapter
# directory; `hfrun merge` folds it into a plain model whose
# greedy generation equals `hfrun generate --adapter` over the base. Bad input exits 2 naming
# it: a target module that matches nothing, an adapter made for another base (the tensor and
# both shapes).
# Usage: test_lora.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

for i in $(seq 30); do
  printf '{"prompt": "Q%d: what do birds do?", "completion": " they sing %d songs over the river."}\n' "$i" "$((i * 7 % 11))"
done > "$TMP/sft.jsonl"
tiny_corpus "$TMP/corpus.txt"

base_yaml() {  # base_yaml OUTPUT_DIR HIDDEN
  cat <<YAML
output_dir: $1
seed: 2
model: {arch: llama, config: {hidden_size: $2, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 64}}
tokenizer: $GPT2
data: {train: [$TMP/corpus.txt], seq_len: 16}
train: {micro_batch_size: 2, max_steps: 2, log_every: 1}
YAML
}
base_yaml "$TMP/base" 16 > "$TMP/base.yaml"
base_yaml "$TMP/other" 32 > "$TMP/other.yaml"
for b in base other; do
  if ! "$HFRUN" "$TMP/$b.yaml" > "$TMP/$b.log" 2>&1; then
    echo "FAIL: base model $b"; cat "$TMP/$b.log"; fail=1
  fi
done

lora_yaml() {  # lora_yaml OUTPUT_DIR MICRO_BATCH ZERO_STAGE [EXTRA_PEFT_KEYS]
  cat <<YAML
output_dir: $1
seed: 4
task: sft
model: {from_pretrained: $TMP/base/final}
data: {train: [$TMP/sft.jsonl], seq_len: 24, shuffle: true}
optimizer: {type: adamw, lr: 0.02}
train: {micro_batch_size: $2, max_steps: 4, log_every: 1, grad_clip: 1.0}
distributed: {zero_stage: $3}
peft: {type: lora, r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]${4:-}}
YAML
}
lora_yaml "$TMP/l1" 4 0 > "$TMP/l1.yaml"
lora_yaml "$TMP/l2" 2 0 > "$TMP/l2.yaml"
lora_yaml "$TMP/l3" 2 2 > "$TMP/l3.yaml"
lora_yaml "$TMP/l6" 2 3 > "$TMP/l6.yaml"
lora_yaml "$TMP/l5" 4 0 > "$TMP/l5.yaml"
echo "distributed: {tensor_parallel: 2}" >> "$TMP/l5.yaml"
sed -i '/^distributed: {zero_stage: 0}$/d' "$TMP/l5.yaml"
"$HFRUN" "$TMP/l1.yaml" > "$TMP/l1.log" 2>&1 || { echo "FAIL: lora -np 1"; cat "$TMP/l1.log"; fail=1; }
cat "$TMP/l1.log"
grep -q "trainable params" "$TMP/l1.log" || { echo "FAIL: no trainable/total parameter line"; fail=1; }
for run in l2 l3 l6 l5; do
  if ! "$HFRUN" -np 2 --oversubscribe "$TMP/$run.yaml" > "$TMP/$run.log" 2>&1; then
    echo "FAIL: lora -np 2 ($run)"; cat "$TMP/$run.log"; fail=1; continue
  fi
  paste <(losses "$TMP/l1/metrics.jsonl") <(losses "$TMP/$run/metrics.jsonl") > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne 4 ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        if ($2 == "" || d > 1e-5 * $1) bad = 1 } END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: LoRA losses differ between -np 1 and -np 2 ($run):"; cat "$TMP/pairs"; fail=1
  fi
done
for f in adapter_config.json adapter_model.safetensors; do
  [ -s "$TMP/l1/final/$f" ] || { echo "FAIL: final/$f missing"; ls -la "$TMP/l1/final"; fail=1; }
done
[ -e "$TMP/l1/final/model.safetensors" ] && { echo "FAIL: final/ holds the base weights"; fail=1; }

# Checkpoints hold what trains only, and resume exactly: 2 steps, then on to 4 (auto-resume).
lora_yaml "$TMP/l4" 4 0 > "$TMP/l4.yaml"
"$HFRUN" "$TMP/l4.yaml" --set train.max_steps=2 > "$TMP/l4a.log" 2>&1 || { echo "FAIL: lora 2 steps"; cat "$TMP/l4a.log"; fail=1; }
ckpt="$(ls -d "$TMP"/l4/checkpoints/step-* 2> /dev/null | tail -1)"
if [ -z "$ckpt" ] || grep -l "embed_tokens" "$ckpt"/*.safetensors > /dev/null 2>&1; then
  echo "FAIL: the LoRA checkpoint ($ckpt) is missing or holds the frozen base:"; ls -la "$ckpt"; fail=1
fi
if ! grep -lq "lora_A" "$ckpt"/*model*.safetensors 2> /dev/null; then
  echo "FAIL: the LoRA checkpoint holds no adapter"; ls -la "$ckpt"; fail=1
fi
"$HFRUN" "$TMP/l4.yaml" > "$TMP/l4b.log" 2>&1 || { echo "FAIL: lora resume"; cat "$TMP/l4b.log"; fail=1; }
grep -q "resuming from" "$TMP/l4b.log" || { echo "FAIL: the second run did not resume"; cat "$TMP/l4b.log"; fail=1; }
paste <(losses "$TMP/l1/metrics.jsonl") <(losses "$TMP/l4/metrics.jsonl") > "$TMP/pairs"
if [ "$(wc -l < "$TMP/pairs")" -ne 4 ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
      if ($2 == "" || d > 1e-6 * $1) bad = 1 } END { exit bad }' "$TMP/pairs"; then
  echo "FAIL: resumed LoRA losses differ from the uninterrupted run:"; cat "$TMP/pairs"; fail=1
fi

# merge = base + adapter: the same greedy continuation.
if ! "$HFRUN" merge --base "$TMP/base/final" --adapter "$TMP/l1/final" --output "$TMP/merged" > "$TMP/merge.log" 2>&1; then
  echo "FAIL: hfrun merge"; cat "$TMP/merge.log"; fail=1
fi
a="$("$HFRUN" generate --model "$TMP/merged" --prompt "Q3: what" --greedy --ids --max-new-tokens 8 2>&1)"
b="$("$HFRUN" generate --model "$TMP/base/final" --adapter "$TMP/l1/final" --prompt "Q3: what" --greedy --ids --max-new-tokens 8 2>&1)"
c="$("$HFRUN" generate --model "$TMP/base/final" --prompt "Q3: what" --greedy --ids --max-new-tokens 8 2>&1)"
if [ "$a" != "$b" ] || [ -z "$a" ]; then
  echo "FAIL: merged model and base + adapter generate differently:"; echo "$a"; echo "$b"; fail=1
fi
[ "$a" = "$c" ] && echo "note: the adapter did not change the greedy continuation"

expect_exit2() {  # expect_exit2 WHAT PATTERN CMD...
  local what="$1" pattern="$2"; shift 2
  "$@" > "$TMP/err.log" 2>&1
  local rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qE "$pattern" "$TMP/err.log"; then
    echo "FAIL: $what: rc $rc (want 2) or no /$pattern/ in:"; cat "$TMP/err.log"; fail=1
  fi
}
lora_yaml "$TMP/bad1" 4 0 ", target_modules: [q_proj, nope]" | sed 's/target_modules: \[q_proj, v_proj, down_proj\], //' > "$TMP/bad1.yaml"
expect_exit2 "unmatched target module" "nope" "$HFRUN" "$TMP/bad1.yaml"
lora_yaml "$TMP/bad2" 4 0 "" | sed "s#$TMP/base/final#$TMP/other/final#" > "$TMP/bad2.yaml"
sed -i "s#r: 4, alpha: 8,#adapter: $TMP/l1/final,#" "$TMP/bad2.yaml"
expect_exit2 "adapter for another base" "lora_A.weight.*\[4, 16\].*\[4, 32\]" "$HFRUN" "$TMP/bad2.yaml"

[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
