#!/usr/bin/env bash
# LoRA SFT end to end: fetches the example data (scripts/example-data.sh), makes prompt/completion
# records from the Brown corpus (examples/make_pairs.js), pretrains the small Llama of
# examples/llama_brown.yaml unless runs/llama_brown/final exists, trains r 8 LoRA adapters on it
# (examples/llama_lora_sft.yaml: val_loss printed every 50 steps; final/ is a PEFT adapter
# directory), merges them into a plain model (runs/llama_lora_sft_merged) and generates with the
# adapter. A few minutes on 2 cores. Extra arguments go to the LoRA run (e.g. -np 2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh
node examples/make_pairs.js "$BUILD_DIR/tests/tokenizer_reference/brown_1mb.txt" \
  "$BUILD_DIR/examples/bert_pairs"
[ -f runs/llama_brown/final/model.safetensors ] || "$BUILD_DIR/hfrun" examples/llama_brown.yaml
"$BUILD_DIR/hfrun" "$@" examples/llama_lora_sft.yaml \
  --set "data.train=[$BUILD_DIR/examples/bert_pairs/sft_train.jsonl]" \
  --set "data.val=[$BUILD_DIR/examples/bert_pairs/sft_val.jsonl]"
"$BUILD_DIR/hfrun" merge --base runs/llama_brown/final --adapter runs/llama_lora_sft/final \
  --output runs/llama_lora_sft_merged
"$BUILD_DIR/hfrun" generate --model runs/llama_brown/final --adapter runs/llama_lora_sft/final \
  --prompt "Complete the sentence: The jury said" --max-new-tokens 20 --greedy
