#!/usr/bin/env bash
# Tensor parallelism with real ranks: the same tiny GPT-2 run (4 heads, global batch 4) gives
# the losses of one process (relative 1e-5) with tensor_parallel 2 on 2 ranks, tensor_parallel
# 2 x data parallel 2 on 4 ranks with zero_stage 0, 1 and 3, and tensor_parallel 4; checkpoints
# written with one tensor-parallel layout resume with another (and on one process) with the
# uninterrupted losses; the exported final/ holds whole parameters.
# Usage: test_tensor_parallel.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

for i in $(seq 120); do echo "Line $i: a ship sails $((i % 5)) miles past the $((i % 3)) lighthouses."; done > "$TMP/t.txt"
# run NAME NP MICRO_BATCH ZERO_STAGE TENSOR_PARALLEL [EXTRA_CHECKPOINT_YAML]
run() {
  cat > "$TMP/$1.yaml" <<YAML
output_dir: $TMP/$1
seed: 5
model: {config: {n_layer: 2, n_head: 4, n_embd: 16, n_positions: 32}}
tokenizer: $GPT2
data: {train: [$TMP/t.txt], seq_len: 16, shuffle: true}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.1}
train: {micro_batch_size: $3, max_steps: 6, log_every: 1, grad_clip: 0.3}
distributed: {zero_stage: $4, tensor_parallel: $5, bucket_mb: 0.05}
checkpoint: {every: 3, keep: 5${6:-}}
YAML
  if ! "$HFRUN" -np "$2" --oversubscribe "$TMP/$1.yaml" > "$TMP/$1.log" 2>&1; then
    echo "FAIL: $1 (-np $2, zero_stage $4, tensor_parallel $5) failed:"; cat "$TMP/$1.log"; fail=1
  fi
}
same_losses() {  # same_losses NAME EXPECTED_PAIRS
  paste <(losses "$TMP/np1/metrics.jsonl" | tail -n "$2") <(losses "$TMP/$1/metrics.jsonl") > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne "$2" ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        r = d / ($1 < 0 ? -$1 : $1); if ($2 == "" || r > 1e-5) bad = 1 } END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: $1: losses differ from one process (reference this):"; cat "$TMP/pairs"; fail=1
  else
    echo "ok: $1"
  fi
}

run np1 1 4 0 1
run tp2 2 4 0 2
run tp2_dp2_z0 4 2 0 2
run tp2_dp2_z1 4 2 1 2
run tp2_dp2_z3 4 2 3 2
run tp4 4 4 0 4
for r in tp2 tp2_dp2_z0 tp2_dp2_z1 tp2_dp2_z3 tp4; do same_losses "$r" 6; done

# The export assembles the split parameters: final/ has wte whole.
if ! grep -q '"transformer.wte.weight":{"dtype":"F32","shape":\[50257,16\]' <(head -c 20000 "$TMP/tp2/final/model.safetensors" | tr -d ' '); then
  echo "FAIL: tp2 final/model.safetensors lacks the whole wte [50257, 16]"; fail=1
fi

# Resharded resume across tensor-parallel layouts.
run re_tp4 4 4 0 4 ", resume: $TMP/tp2_dp2_z1/checkpoints/step-00000003"
run re_np1 1 4 0 1 ", resume: $TMP/tp2_dp2_z3/checkpoints/step-00000003"
run re_tp2_z2 4 2 2 2 ", resume: $TMP/tp4/checkpoints/step-00000003"
for r in re_tp4 re_np1 re_tp2_z2; do
  grep -q "resuming from .*step-00000003" "$TMP/$r.log" || { echo "FAIL: $r did not resume"; cat "$TMP/$r.log"; fail=1; }
  same_losses "$r" 3
done

[ $fail -eq 0 ] && echo "ok: tensor-parallel losses match" || echo "FAILED"
exit $fail
