#!/usr/bin/env bash
# ZeRO end to end with real ranks: the same tiny GPT-2 run (same global batch of 4 sequences,
# grad accumulation 2, clipping on) gives the same per-step losses (relative 1e-5) on
#   -np 1, -np 2 with zero_stage 0/1/2/3, and -np 4 with zero_stage 1/2/3,
# per-rank training-state bytes follow the ZeRO paper's formulas, and checkpoints written by 2
# ranks with ZeRO-2 and ZeRO-3 resume on 1, 2 and 4 ranks with other stages, continuing with the
# uninterrupted run's losses. In bf16, the weights' copies carried across steps change no bit, nor
# does keeping the parameters in memory the ranks of the node share.
# Usage: test_zero.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

for i in $(seq 120); do echo "Line $i: a ship sails $((i % 5)) miles past the $((i % 3)) lighthouses."; done > "$TMP/z.txt"
cfg() {  # cfg OUTPUT_DIR MICRO_BATCH ZERO_STAGE GRAD_ACCUM [EXTRA_CHECKPOINT_YAML]
  cat <<YAML
output_dir: $1
seed: 5
model: {config: {n_layer: 2, n_head: 2, n_embd: 16, n_positions: 32}}
tokenizer: $GPT2
data: {train: [$TMP/z.txt], seq_len: 16, shuffle: true}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.1, betas: [0.9, 0.95]}
scheduler: {type: cosine, warmup_steps: 2}
train: {micro_batch_size: $2, grad_accum_steps: $4, max_steps: 6, log_every: 1, grad_clip: 0.3}
distributed: {zero_stage: $3, bucket_mb: 0.05}
checkpoint: {every: 3, keep: 5${5:-}}
YAML
}
run() {  # run NAME NP MICRO_BATCH ZERO_STAGE [EXTRA]; 4 ranks accumulate 1 micro-step, others 2
  local accum=2
  [ "$2" -eq 4 ] && accum=1
  cfg "$TMP/$1" "$3" "$4" "$accum" "${5:-}" > "$TMP/$1.yaml"
  if ! "$HFRUN" -np "$2" --oversubscribe "$TMP/$1.yaml" > "$TMP/$1.log" 2>&1; then
    echo "FAIL: $1 (-np $2, zero_stage $4) failed:"; cat "$TMP/$1.log"; fail=1
  fi
}
same_bits() {  # same_bits RUN_DIR OTHER_RUN_DIR: the same final model and losses, bit for bit
  cmp -s "$1/final/model.safetensors" "$2/final/model.safetensors" &&
    cmp -s <(losses "$1/metrics.jsonl") <(losses "$2/metrics.jsonl")
}
same_losses() {  # same_losses WHAT REFERENCE_METRICS OTHER_METRICS EXPECTED_PAIRS
  paste <(losses "$2" | tail -n "$4") <(losses "$3") > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne "$4" ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        r = d / ($1 < 0 ? -$1 : $1); if (r > m) m = r; if ($2 == "" || r > 1e-5) bad = 1 }
        END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: $1: losses differ from the reference (reference this):"; cat "$TMP/pairs"; fail=1
  else
    echo "ok: $1"
  fi
}

run np1 1 2 0
run np2_z0 2 1 0
run np2_z1 2 1 1
run np2_z2 2 1 2
run np2_z3 2 1 3
# 4 ranks: micro batch 1 and accumulation 1 keep the global batch at 4.
run np4_z1 4 1 1
run np4_z2 4 1 2
run np4_z3 4 1 3
ref="$TMP/np1/metrics.jsonl"
for r in np2_z0 np2_z1 np2_z2 np2_z3 np4_z1 np4_z2 np4_z3; do same_losses "$r" "$ref" "$TMP/$r/metrics.jsonl" 6; done

# bf16 with the weights' bf16 copies carried across steps (the optimizer writing the copies of
# the parameters it updates, ZeRO's gathers invalidating the rest) trains bit for bit as casting
# every weight at every step (HFRUN_WEIGHT_COPIES=0): DDP, ZeRO-1 and ZeRO-2 on 2 ranks, and
# tensor parallel 2 (sharded local weights).
for z in 0 1 2 tp; do
  for carry in 1 0; do
    name="bf16_${z}_$carry"
    if [ "$z" = tp ]; then
      cfg "$TMP/$name" 2 0 2 > "$TMP/$name.yaml"
      sed -i 's/^distributed: {zero_stage: 0,/distributed: {zero_stage: 0, tensor_parallel: 2,/' "$TMP/$name.yaml"
    else
      cfg "$TMP/$name" 1 "$z" 2 > "$TMP/$name.yaml"
    fi
    sed -i 's/^train: {/train: {mixed_precision: bf16, /' "$TMP/$name.yaml"
    if ! HFRUN_WEIGHT_COPIES=$carry "$HFRUN" -np 2 --oversubscribe "$TMP/$name.yaml" > "$TMP/$name.log" 2>&1; then
      echo "FAIL: $name failed:"; cat "$TMP/$name.log"; fail=1
    fi
  done
  if ! same_bits "$TMP/bf16_${z}_1" "$TMP/bf16_${z}_0"; then
    echo "FAIL: bf16 ($z) with the weight copies carried differs from casting every step:"
    paste <(losses "$TMP/bf16_${z}_1/metrics.jsonl") <(losses "$TMP/bf16_${z}_0/metrics.jsonl"); fail=1
  else
    echo "ok: bf16 ($z): carried weight copies change no bit"
  fi
done

# DDP and ZeRO-1/2 on one node keep one copy of the parameters (and under bf16 of their copies)
# in memory the ranks share, each rank's step writing its part (DDP: of the whole optimizer
# state, shared too): the same bits as each rank holding its own copy and gathering, or under
# DDP running the whole step (HFRUN_SHM_COLLECTIVES=0; two ranks sum alike either way).
for z in 0 1 2; do
  grep -q "parameters [0-9.]* in memory the node's ranks share" "$TMP/bf16_${z}_1.log" ||
    { echo "FAIL: bf16 ($z) did not share its parameters:"; grep "data parallel" "$TMP/bf16_${z}_1.log"; fail=1; }
  if [ "$z" = 0 ] && ! grep -q "optimizer [0-9.]* MiB in memory the node's ranks share" "$TMP/bf16_${z}_1.log"; then
    echo "FAIL: bf16 DDP did not share its optimizer step:"; grep "data parallel" "$TMP/bf16_${z}_1.log"; fail=1
  fi
  name="bf16_${z}_private"
  cfg "$TMP/$name" 1 "$z" 2 > "$TMP/$name.yaml"
  sed -i 's/^train: {/train: {mixed_precision: bf16, /' "$TMP/$name.yaml"
  if ! HFRUN_SHM_COLLECTIVES=0 "$HFRUN" -np 2 --oversubscribe "$TMP/$name.yaml" > "$TMP/$name.log" 2>&1; then
    echo "FAIL: $name failed:"; cat "$TMP/$name.log"; fail=1
  fi
  if grep -q "in memory the node's ranks share" "$TMP/$name.log" ||
     ! same_bits "$TMP/bf16_${z}_1" "$TMP/$name"; then
    echo "FAIL: bf16 ($z) with shared parameters differs from private ones:"
    paste <(losses "$TMP/bf16_${z}_1/metrics.jsonl") <(losses "$TMP/$name/metrics.jsonl"); fail=1
  else
    echo "ok: bf16 ($z): shared parameters and weight copies change no bit"
  fi
done

# Where /dev/shm has no room for the parameters (HFRUN_SHM_MAX_BYTES stands for a small one), each
# rank keeps its own copy and gathers, and the run says why (a container's /dev/shm is 64 MiB):
# the sums still go through shared memory, and the run is the shared one's bit for bit.
cfg "$TMP/np2_z1_private" 1 1 2 > "$TMP/np2_z1_private.yaml"
if ! HFRUN_SHM_MAX_BYTES=65536 "$HFRUN" -np 2 --oversubscribe "$TMP/np2_z1_private.yaml" > "$TMP/np2_z1_private.log" 2>&1; then
  echo "FAIL: np2_z1_private failed:"; cat "$TMP/np2_z1_private.log"; fail=1
fi
if ! grep -q "over node shared memory" "$TMP/np2_z1_private.log" ||
   grep -q "in memory the node's ranks share" "$TMP/np2_z1_private.log" ||
   ! grep -q "note: /dev/shm has no room for the one copy of the parameters" "$TMP/np2_z1_private.log" ||
   grep -q "note: /dev/shm has no room" "$TMP/np2_z1.log" ||
   ! grep -q "in memory the node's ranks share" "$TMP/np2_z1.log" ||
   ! cmp -s <(losses "$TMP/np2_z1/metrics.jsonl") <(losses "$TMP/np2_z1_private/metrics.jsonl"); then
  echo "FAIL: ZeRO-1 without room for shared parameters:"; grep "data parallel" "$TMP/np2_z1_private.log" "$TMP/np2_z1.log"
  paste <(losses "$TMP/np2_z1/metrics.jsonl") <(losses "$TMP/np2_z1_private/metrics.jsonl"); fail=1
else
  echo "ok: ZeRO-1 without room for shared parameters gathers, with the same losses"
fi

# Per-rank training state follows the ZeRO paper (4P = the parameters' bytes): stage 0 16P,
# stage 1 8P + 8P/N, stage 2 4P + 12P/N, stage 3 16P/N, within 10%.
for r in np2_z0:2:0 np2_z1:2:1 np2_z2:2:2 np2_z3:2:3 np4_z1:4:1 np4_z2:4:2 np4_z3:4:3; do
  IFS=: read -r name n z <<<"$r"
  line=$(grep -m1 'training state per rank' "$TMP/$name.log")
  if ! awk -v n="$n" -v z="$z" -v line="$line" 'BEGIN {
        if (!match(line, /per rank [0-9.]+ MiB/)) exit 1
        split(substr(line, RSTART, RLENGTH), f, " "); total = f[3]
        if (!match(line, /for [0-9.]+ MiB of f32 parameters/)) exit 1
        split(substr(line, RSTART, RLENGTH), f, " "); p4 = f[2]
        want = (z == 0) ? 4 * p4 : (z == 1) ? 2 * p4 + 2 * p4 / n : (z == 2) ? p4 + 3 * p4 / n : 4 * p4 / n
        printf "zero_stage %d, %d ranks: %.2f MiB per rank, formula %.2f MiB\n", z, n, total, want
        exit (total > 1.1 * want || total < 0.9 * want) }'; then
    echo "FAIL: $name: training state per rank not as the ZeRO formula: '$line'"; fail=1
  fi
done

# Memory after setup (HFRUN_MEMORY_TRACE), on a model large enough that huge-page rounding is
# small beside it: once prepared a rank holds its training state and nothing more (no whole
# gradient buffer under ZeRO-2/3, no whole parameter buffer under ZeRO-3, no cached block
# handed out whole to a request half its size), and setting up never held more than the
# model as built plus that state (ZeRO-3 fills its units one at a time).
for z in 2 3; do
  cat > "$TMP/mem_z$z.yaml" <<YAML
output_dir: $TMP/mem_z$z
model: {config: {n_layer: 2, n_head: 4, n_embd: 256, n_positions: 32}}
tokenizer: $GPT2
data: {train: [$TMP/z.txt], seq_len: 16}
train: {micro_batch_size: 1, max_steps: 1}
distributed: {zero_stage: $z}
checkpoint: {every: 0}
YAML
  if ! HFRUN_MEMORY_TRACE=1 "$HFRUN" -np 2 --oversubscribe "$TMP/mem_z$z.yaml" > "$TMP/mem_z$z.log" 2>&1; then
    echo "FAIL: mem_z$z failed:"; cat "$TMP/mem_z$z.log"; fail=1; continue
  fi
  if ! awk -v z="$z" '
      /^\[rank 0\] \[memory\] model built/ { match($0, /tensors +[0-9.]+/); split(substr($0, RSTART, RLENGTH), f, " "); built = f[2] }
      /^\[rank 0\] \[memory\] prepared/ { match($0, /tensors +[0-9.]+ MiB \(peak +[0-9.]+/)
        split(substr($0, RSTART, RLENGTH), f, " "); live = f[2]; peak = f[5] }
      /^\[rank 0\].*training state per rank/ { match($0, /per rank [0-9.]+/); split(substr($0, RSTART, RLENGTH), f, " "); state = f[3] }
      END { printf "zero_stage %d: model %.1f MiB, state %.1f MiB, after setup %.1f MiB (peak %.1f)\n", z, built, state, live, peak
            exit !(state > 0 && built > 0 && live <= 1.05 * state + 4 && peak <= 1.05 * (built + state) + 4) }' "$TMP/mem_z$z.log"; then
    echo "FAIL: mem_z$z: setup holds more than the model and its training state:"
    grep -E "rank 0.*(memory|training state)" "$TMP/mem_z$z.log"; fail=1
  fi
done

# ZeRO-3 gathers the sharded parameters for the final export.
[ -s "$TMP/np2_z3/final/model.safetensors" ] || { echo "FAIL: ZeRO-3 run exported no final/model.safetensors"; fail=1; }

# ZeRO-2 optimizer state is sharded: each rank wrote its own optimizer file.
ck="$TMP/np2_z2/checkpoints/step-00000003"
for f in rank-00000-of-00002.optimizer.safetensors rank-00001-of-00002.optimizer.safetensors \
         rank-00000-of-00002.model.safetensors manifest.json; do
  [ -s "$ck/$f" ] || { echo "FAIL: $ck/$f missing"; ls "$ck"; fail=1; }
done

# Resharded resume from the 2-rank ZeRO-2 checkpoint at step 3: steps 4-6 as uninterrupted.
run re_np4_z1 4 1 1 ", resume: $ck"
run re_np1 1 2 0 ", resume: $ck"
run re_np2_z0 2 1 0 ", resume: $ck"
run re_np2_z3 2 1 3 ", resume: $ck"
# ... and a 2-rank ZeRO-3 checkpoint (parameters sharded too) on 1 process and 4 ranks ZeRO-2.
ck3="$TMP/np2_z3/checkpoints/step-00000003"
run re3_np1 1 2 0 ", resume: $ck3"
run re3_np4_z2 4 1 2 ", resume: $ck3"
for r in re_np4_z1 re_np1 re_np2_z0 re_np2_z3 re3_np1 re3_np4_z2; do
  grep -q "resuming from .*step-0000000[3]" "$TMP/$r.log" || { echo "FAIL: $r did not resume"; cat "$TMP/$r.log"; fail=1; }
  # metrics.jsonl of a resumed run in a fresh output_dir holds steps 4-6.
  same_losses "$r (resharded resume)" "$ref" "$TMP/$r/metrics.jsonl" 3
done

# Every manifest checksum is what xxHash's own xxh128sum says of the file.
if command -v xxh128sum >/dev/null; then
  python3 -c 'import json,sys
for f in json.load(open(sys.argv[1] + "/manifest.json"))["files"]: print(f["xxh3_128"] + "  " + sys.argv[1] + "/" + f["name"])' \
    "$ck3" > "$TMP/sums"
  if [ "$(wc -l < "$TMP/sums")" -lt 5 ] || ! xxh128sum -c --quiet "$TMP/sums"; then
    echo "FAIL: manifest checksums differ from xxh128sum:"; cat "$TMP/sums"; fail=1
  else
    echo "ok: manifest checksums = xxh128sum"
  fi
fi

# A checkpoint one rank finds damaged (rank 1's optimizer pieces of step 6; rank 0 reads only
# its own): named with the rank, exit 2 when asked for by path; auto-resume passes over it on
# every rank, to step 3, and ends with the uninterrupted losses.
cp -r "$TMP/np2_z3" "$TMP/auto_z3"
bad="$TMP/auto_z3/checkpoints/step-00000006/rank-00001-of-00002.optimizer.safetensors"
printf '\x55' | dd of="$bad" bs=1 seek=$(( $(stat -c %s "$bad") - 2 )) conv=notrunc 2>/dev/null
cfg "$TMP/path_z3" 1 3 2 ", resume: $TMP/auto_z3/checkpoints/step-00000006" > "$TMP/path_z3.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/path_z3.yaml" > "$TMP/path_z3.log" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "rank 1: corrupt checkpoint .*rank-00001-of-00002.optimizer.safetensors has checksum" "$TMP/path_z3.log"; then
  echo "FAIL: resume from a damaged checkpoint by path: exit $rc (want 2, naming rank 1 and the file)"
  cat "$TMP/path_z3.log"; fail=1
fi
run auto_z3 2 1 3
if ! grep -q "skipping checkpoint .*step-00000006: rank 1: corrupt checkpoint" "$TMP/auto_z3.log" ||
   ! grep -q "resuming from .*step-00000003" "$TMP/auto_z3.log"; then
  echo "FAIL: auto-resume did not pass over the damaged step 6 to step 3:"; cat "$TMP/auto_z3.log"; fail=1
fi
same_losses "auto-resume past a damaged checkpoint" "$ref" "$TMP/auto_z3/metrics.jsonl" 6

[ $fail -eq 0 ] && echo "ok: ZeRO losses match" || echo "FAILED"
exit $fail
