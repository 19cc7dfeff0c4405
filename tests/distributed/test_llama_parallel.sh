#!/usr/bin/env bash
# Every parallel mode for the Llama family, applied from outside the model (distributed/): the
# same tiny Llama (GQA: 4 query heads over 2 KV heads, untied head) trained from scratch gives the
# losses of one process (relative 1e-5) with DDP, ZeRO 1/2/3, tensor parallel 2 and tensor
# parallel 2 x data parallel 2 (ZeRO 1); checkpoints reshard across those layouts; Qwen3 (q/k
# norms whose gradients are summed over the tensor-parallel group, tied embeddings) with tensor
# parallel 2 matches one process too. train.activation_checkpointing (alone, with ZeRO-3, and
# for GPT-2 with dropout, whose masks the recompute must replay) logs the same losses. The
# exports load in `hfrun generate`, and a num_key_value_heads that tensor_parallel does not
# divide is refused by name (exit 2).
# Usage: test_llama_parallel.sh PATH/TO/hfrun TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
TOKENIZER="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

for i in $(seq 120); do echo "Line $i: a ship sails $((i % 5)) miles past the $((i % 3)) lighthouses."; done > "$TMP/t.txt"
LLAMA='arch: llama, config: {hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}'
QWEN3='arch: qwen3, config: {hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 6, tie_word_embeddings: true, max_position_embeddings: 64}'
# run NAME NP MICRO_BATCH ZERO_STAGE TENSOR_PARALLEL MODEL [EXTRA_CHECKPOINT_YAML] [EXTRA_TRAIN_YAML]
run() {
  cat > "$TMP/$1.yaml" <<YAML
output_dir: $TMP/$1
seed: 5
model: {$6}
tokenizer: $TOKENIZER
data: {train: [$TMP/t.txt], seq_len: 16, shuffle: true}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.1}
train: {micro_batch_size: $3, max_steps: 6, log_every: 1, grad_clip: 0.3${8:-}}
distributed: {zero_stage: $4, tensor_parallel: $5, bucket_mb: 0.05}
checkpoint: {every: 3, keep: 5${7:-}}
YAML
  if ! "$HFRUN" -np "$2" --oversubscribe "$TMP/$1.yaml" > "$TMP/$1.log" 2>&1; then
    echo "FAIL: $1 (-np $2, zero_stage $4, tensor_parallel $5) failed:"; cat "$TMP/$1.log"; fail=1
  fi
}
same_losses() {  # same_losses REFERENCE NAME EXPECTED_PAIRS
  paste <(losses "$TMP/$1/metrics.jsonl" | tail -n "$3") <(losses "$TMP/$2/metrics.jsonl") > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne "$3" ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        r = d / ($1 < 0 ? -$1 : $1); if ($2 == "" || r > 1e-5) bad = 1 } END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: $2: losses differ from $1 (reference this):"; cat "$TMP/pairs"; fail=1
  else
    echo "ok: $2"
  fi
}

run np1 1 4 0 1 "$LLAMA"
run ddp2 2 2 0 1 "$LLAMA"
run zero1 2 2 1 1 "$LLAMA"
run zero2 2 2 2 1 "$LLAMA"
run zero3 2 2 3 1 "$LLAMA"
run tp2 2 4 0 2 "$LLAMA"
run tp2_dp2_z1 4 2 1 2 "$LLAMA"
for r in ddp2 zero1 zero2 zero3 tp2 tp2_dp2_z1; do same_losses np1 "$r" 6; done

# Resharded resume across layouts.
run re_np1 1 4 0 1 "$LLAMA" ", resume: $TMP/tp2_dp2_z1/checkpoints/step-00000003"
run re_tp2 2 4 0 2 "$LLAMA" ", resume: $TMP/zero3/checkpoints/step-00000003"
run re_z3 2 2 3 1 "$LLAMA" ", resume: $TMP/tp2/checkpoints/step-00000003"
for r in re_np1 re_tp2 re_z3; do
  grep -q "resuming from .*step-00000003" "$TMP/$r.log" || { echo "FAIL: $r did not resume"; cat "$TMP/$r.log"; fail=1; }
  same_losses np1 "$r" 3
done

# Qwen3: q_norm/k_norm gradients summed over the tensor-parallel group; tied embeddings.
run q_np1 1 4 0 1 "$QWEN3"
run q_tp2 2 4 0 2 "$QWEN3"
same_losses q_np1 q_tp2 6

# Activation checkpointing: the same losses with each block recomputed in the backward.
run ac_np1 1 4 0 1 "$LLAMA" "" ", activation_checkpointing: true"
run ac_z3 2 2 3 1 "$LLAMA" "" ", activation_checkpointing: true"
run ac_tp2 2 4 0 2 "$LLAMA" "" ", activation_checkpointing: true"
for r in ac_np1 ac_z3 ac_tp2; do same_losses np1 "$r" 6; done
GPT2_DROPOUT='config: {n_layer: 2, n_head: 4, n_embd: 16, n_positions: 32, resid_pdrop: 0.1, attn_pdrop: 0.1, embd_pdrop: 0.1}'
run g_np1 1 4 0 1 "$GPT2_DROPOUT"
run g_ac 1 4 0 1 "$GPT2_DROPOUT" "" ", activation_checkpointing: true"
same_losses g_np1 g_ac 6

# The exports (tensor-parallel parts assembled) are HF directories that generate reads; the
# tensor-parallel export generates what the single-process one does.
for r in np1 tp2; do
  grep -q '"model_type": "llama"' "$TMP/$r/final/config.json" || { echo "FAIL: $r/final/config.json"; fail=1; }
  "$HFRUN" generate --model "$TMP/$r/final" --prompt "Line 7: a ship" --max-new-tokens 5 --ids > "$TMP/$r.gen" 2>&1 \
    || { echo "FAIL: generate from $r/final"; cat "$TMP/$r.gen"; fail=1; }
done
cmp -s "$TMP/np1.gen" "$TMP/tp2.gen" || { echo "FAIL: generate differs between np1 and tp2 exports"; cat "$TMP/np1.gen" "$TMP/tp2.gen"; fail=1; }
grep -q '"lm_head.weight"' <(head -c 4000 "$TMP/tp2/final/model.safetensors") || { echo "FAIL: tp2 export lacks lm_head.weight"; fail=1; }

# Fine-tuning from the local Hugging Face hub cache: from_pretrained ORG/NAME resolves
# models--ORG--NAME/snapshots/<refs/main>/ under $HF_HUB_CACHE (the tokenizer comes with it); a
# model missing from the cache is refused naming where it looked.
mkdir -p "$TMP/hub/models--acme--tiny-llama/refs" "$TMP/hub/models--acme--tiny-llama/snapshots"
cp -r "$TMP/np1/final" "$TMP/hub/models--acme--tiny-llama/snapshots/0123abc"
echo 0123abc > "$TMP/hub/models--acme--tiny-llama/refs/main"
cat > "$TMP/hub.yaml" <<YAML
output_dir: $TMP/hubrun
model: {from_pretrained: acme/tiny-llama}
data: {train: [$TMP/t.txt], seq_len: 16}
train: {micro_batch_size: 2, max_steps: 2, log_every: 1}
YAML
if HF_HUB_CACHE="$TMP/hub" "$HFRUN" "$TMP/hub.yaml" > "$TMP/hub.log" 2>&1 &&
   grep -q '"model_type": "llama"' "$TMP/hubrun/final/config.json"; then
  echo "ok: from_pretrained from the hub cache"
else
  echo "FAIL: from_pretrained acme/tiny-llama from the hub cache"; cat "$TMP/hub.log"; fail=1
fi
HF_HUB_CACHE="$TMP/hub" "$HFRUN" "$TMP/hub.yaml" --set model.from_pretrained=acme/other > "$TMP/hub2.log" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "models--acme--other" "$TMP/hub2.log"; then
  echo "FAIL: a model missing from the cache: exit $rc"; cat "$TMP/hub2.log"; fail=1
fi

# KV heads must split whole across tensor-parallel ranks.
cat > "$TMP/bad.yaml" <<YAML
output_dir: $TMP/bad
model: {arch: llama, config: {hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 1}}
tokenizer: $TOKENIZER
data: {train: [$TMP/t.txt], seq_len: 16}
train: {micro_batch_size: 2, max_steps: 2}
distributed: {tensor_parallel: 2}
YAML
"$HFRUN" -np 2 --oversubscribe "$TMP/bad.yaml" > "$TMP/bad.log" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "num_key_value_heads" "$TMP/bad.log"; then
  echo "FAIL: indivisible KV heads: exit $rc (want 2 naming num_key_value_heads)"; cat "$TMP/bad.log"; fail=1
else
  echo "ok: indivisible KV heads refused"
fi

[ $fail -eq 0 ] && echo "ok: llama family parallel losses match" || echo "FAILED"
exit $fail
