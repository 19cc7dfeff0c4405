#!/usr/bin/env bash
# Data-parallel training end to end: the same tiny GPT-2 run with `hfrun -np 1` (micro batch 4)
# and `hfrun -np 2` (micro batch 2, same global batch) logs the same per-step losses (relative
# 1e-5), and only rank 0 writes one complete final/; its sums through node shared memory give the
# losses of Open MPI's exactly. Also: `-np 2 --dry-run` prints the mpirun command line. Usage: test_data_parallel.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0

for i in $(seq 80); do echo "Line $i: the boat carries $((i % 7)) apples to the market."; done > "$TMP/dp.txt"
dp_yaml() {  # dp_yaml OUTPUT_DIR MICRO_BATCH
  cat <<YAML
output_dir: $1
seed: 11
model: {config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32}}
tokenizer: $GPT2
data: {train: [$TMP/dp.txt], val: [$TMP/dp.txt], seq_len: 16, shuffle: false}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.1}
train: {micro_batch_size: $2, max_steps: 6, log_every: 1, grad_clip: 0.5, eval_every: 3}
YAML
}
dp_yaml "$TMP/np1" 4 > "$TMP/np1.yaml"
dp_yaml "$TMP/np2" 2 > "$TMP/np2.yaml"

out="$("$HFRUN" -np 2 --oversubscribe "$TMP/np2.yaml" --dry-run 2>&1)"
if ! grep -qE '(mpirun|mpiexec)[^ ]* .*-np 2 .*-x OMP_NUM_THREADS=[0-9]+ .*train .*np2\.yaml' <<<"$out"; then
  echo "FAIL: -np 2 --dry-run printed no mpirun command line"; echo "$out"; fail=1
fi

if ! "$HFRUN" -np 1 "$TMP/np1.yaml" > "$TMP/np1.log" 2>&1; then
  echo "FAIL: -np 1 run failed"; cat "$TMP/np1.log"; fail=1
fi
# A segment name that a killed job's rank 0 left in /dev/shm (its creator gone, an hour old):
# the next job on the node removes it.
( exit 0 ) & dead=$!
wait "$dead"
stale="/dev/shm/hfrun-$dead-0"
if [ -d /dev/shm ] && [ ! -e "$stale" ]; then
  head -c 4096 /dev/zero > "$stale" && touch -d '1 hour ago' "$stale"
else
  stale=""
fi
if ! "$HFRUN" -np 2 --oversubscribe "$TMP/np2.yaml" > "$TMP/np2.log" 2>&1; then
  echo "FAIL: -np 2 run failed"; cat "$TMP/np2.log"; fail=1
fi
cat "$TMP/np2.log"
if [ -n "$stale" ] && [ -e "$stale" ]; then
  echo "FAIL: the stale segment $stale of a dead job was not removed"; rm -f "$stale"; fail=1
fi

paste <(losses "$TMP/np1/metrics.jsonl") <(losses "$TMP/np2/metrics.jsonl") > "$TMP/pairs"
n=$(wc -l < "$TMP/pairs")
if [ "$n" -ne 6 ]; then echo "FAIL: expected 6 loss pairs, got $n"; cat "$TMP/pairs"; fail=1; fi
if ! awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1);
            if (r > m) m = r; if ($2 == "" || r > 1e-5) bad = 1 }
          END { printf "max relative loss difference: %.3g over %d steps\n", m, NR; exit bad }' \
       "$TMP/pairs"; then
  echo "FAIL: per-step losses differ between -np 1 and -np 2 (np1 np2):"; cat "$TMP/pairs"; fail=1
fi

# Two ranks on one node sum their large buckets (here the embedding table's) through node shared
# memory; with HFRUN_SHM_COLLECTIVES=0 Open MPI sums them, and two ranks' sums are the same bits
# either way: the same loss strings.
grep -q "data parallel: 2 ranks over node shared memory" "$TMP/np2.log" ||
  { echo "FAIL: the -np 2 run does not report node shared memory"; head -3 "$TMP/np2.log"; fail=1; }
dp_yaml "$TMP/np2mpi" 2 > "$TMP/np2mpi.yaml"
if ! HFRUN_SHM_COLLECTIVES=0 "$HFRUN" -np 2 --oversubscribe "$TMP/np2mpi.yaml" > "$TMP/np2mpi.log" 2>&1; then
  echo "FAIL: -np 2 run with HFRUN_SHM_COLLECTIVES=0 failed"; cat "$TMP/np2mpi.log"; fail=1
fi
grep -q "data parallel: 2 ranks over Open MPI" "$TMP/np2mpi.log" ||
  { echo "FAIL: HFRUN_SHM_COLLECTIVES=0 does not report Open MPI"; head -3 "$TMP/np2mpi.log"; fail=1; }
if [ "$(losses "$TMP/np2/metrics.jsonl")" != "$(losses "$TMP/np2mpi/metrics.jsonl")" ]; then
  echo "FAIL: losses differ between shared-memory and Open MPI sums (shm mpi):"
  paste <(losses "$TMP/np2/metrics.jsonl") <(losses "$TMP/np2mpi/metrics.jsonl"); fail=1
fi

# DDP ranks of one node keep one copy of the parameters and of the optimizer state, each rank
# updating its part. Where /dev/shm has no room for the state (HFRUN_SHM_MAX_BYTES stands for a
# small one: here between the parameters' 3.2 MB and the state's 6.5 MB) rank 0 runs the whole
# step alone; where it has none for the parameters each rank keeps its own and runs the whole
# step. The same losses every way.
grep -q "parameters [0-9.]* in memory the node's ranks share, .*optimizer [0-9.]* MiB in memory the node's ranks share" "$TMP/np2.log" ||
  { echo "FAIL: DDP on one node does not share its parameters and optimizer state:"; grep "data parallel" "$TMP/np2.log"; fail=1; }
for room in 4000000:"rank 0 runs the whole optimizer step alone" 65536:"each rank keeps its own and runs the whole optimizer step"; do
  bytes="${room%%:*}"; note="${room#*:}"
  dp_yaml "$TMP/np2_$bytes" 2 > "$TMP/np2_$bytes.yaml"
  if ! HFRUN_SHM_MAX_BYTES="$bytes" "$HFRUN" -np 2 --oversubscribe "$TMP/np2_$bytes.yaml" > "$TMP/np2_$bytes.log" 2>&1; then
    echo "FAIL: -np 2 run with HFRUN_SHM_MAX_BYTES=$bytes failed"; cat "$TMP/np2_$bytes.log"; fail=1
  fi
  grep -q "$note" "$TMP/np2_$bytes.log" ||
    { echo "FAIL: HFRUN_SHM_MAX_BYTES=$bytes does not say '$note':"; grep "data parallel" "$TMP/np2_$bytes.log"; fail=1; }
  if [ "$(losses "$TMP/np2/metrics.jsonl")" != "$(losses "$TMP/np2_$bytes/metrics.jsonl")" ]; then
    echo "FAIL: losses differ with HFRUN_SHM_MAX_BYTES=$bytes (shared, not):"
    paste <(losses "$TMP/np2/metrics.jsonl") <(losses "$TMP/np2_$bytes/metrics.jsonl"); fail=1
  fi
done

# Validation is split across ranks and averaged over all targets: the same val_loss.
vals() { awk 'match($0, /"val_loss": [-0-9.eE+]+/) { print substr($0, RSTART + 12, RLENGTH - 12) }' "$1"; }
paste <(vals "$TMP/np1/metrics.jsonl") <(vals "$TMP/np2/metrics.jsonl") > "$TMP/vpairs"
if [ "$(wc -l < "$TMP/vpairs")" -ne 2 ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
      if ($2 == "" || d > 1e-5 * ($1 < 0 ? -$1 : $1)) bad = 1 } END { exit bad }' "$TMP/vpairs"; then
  echo "FAIL: val_loss differs between -np 1 and -np 2 (np1 np2):"; cat "$TMP/vpairs"; fail=1
fi

finals=$(find "$TMP/np2" -type d -name final | wc -l)
if [ "$finals" -ne 1 ]; then echo "FAIL: $finals final/ directories under the -np 2 output"; fail=1; fi
for f in config.json model.safetensors tokenizer.json; do
  [ -s "$TMP/np2/final/$f" ] || { echo "FAIL: -np 2 final/$f missing"; fail=1; }
done
metrics_lines=$(grep -c '"loss"' "$TMP/np2/metrics.jsonl")
[ "$metrics_lines" -eq 6 ] || { echo "FAIL: metrics.jsonl has $metrics_lines loss lines (one writer expected)"; fail=1; }

# distributed.reduce_dtype bf16 over real ranks (MPI's bf16 sum), DDP and ZeRO-3: the gradients
# cross in bf16, so the losses follow the f32 run closely (relative 2e-3) but not bitwise.
for z in 0 3; do
  dp_yaml "$TMP/bf16_$z" 2 > "$TMP/bf16_$z.yaml"
  if ! "$HFRUN" -np 2 --oversubscribe "$TMP/bf16_$z.yaml" --set distributed.reduce_dtype=bf16 \
       --set distributed.zero_stage=$z > "$TMP/bf16_$z.log" 2>&1; then
    echo "FAIL: -np 2 reduce_dtype bf16 (zero_stage $z)"; cat "$TMP/bf16_$z.log"; fail=1; continue
  fi
  paste <(losses "$TMP/np1/metrics.jsonl") <(losses "$TMP/bf16_$z/metrics.jsonl") > "$TMP/bpairs"
  if ! awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > m) m = r;
              if (r > 2e-3) bad = 1; if (d > 0) differ = 1 }
            END { printf "reduce_dtype bf16: max relative loss difference %.3g\n", m;
                  exit (bad || NR != 6 || !differ) }' "$TMP/bpairs"; then
    echo "FAIL: reduce_dtype bf16 (zero_stage $z) losses (f32 bf16):"; cat "$TMP/bpairs"; fail=1
  fi
done

# distributed.debug checks every collective across the ranks (DDP and ZeRO-3): the same losses.
for z in 0 3; do
  dp_yaml "$TMP/debug_$z" 2 > "$TMP/debug_$z.yaml"
  if ! "$HFRUN" -np 2 --oversubscribe "$TMP/debug_$z.yaml" --set distributed.debug=true \
       --set distributed.zero_stage=$z > "$TMP/debug_$z.log" 2>&1; then
    echo "FAIL: -np 2 distributed.debug (zero_stage $z)"; cat "$TMP/debug_$z.log"; fail=1; continue
  fi
  paste <(losses "$TMP/np1/metrics.jsonl") <(losses "$TMP/debug_$z/metrics.jsonl") > "$TMP/dpairs"
  if ! awk '{ d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1);
              if ($2 == "" || r > 1e-5) bad = 1 } END { exit (bad || NR != 6) }' "$TMP/dpairs"; then
    echo "FAIL: distributed.debug (zero_stage $z) losses (np1 debug):"; cat "$TMP/dpairs"; fail=1
  fi
done

# A configuration that differs across ranks is refused at start (exit 2), naming the line.
MPIRUN="${MPIEXEC:-mpirun}"
root_flag=""; [ "$(id -u)" -eq 0 ] && root_flag="--allow-run-as-root"
out="$(timeout 60 "$MPIRUN" $root_flag --oversubscribe -np 1 "$HFRUN" "$TMP/np2.yaml" : \
       -np 1 "$HFRUN" "$TMP/np2.yaml" --set train.max_steps=7 2>&1)"
rc=$?
if [ $rc -ne 2 ] || ! grep -q "differs across ranks: rank 1 has '  max_steps: 7' where rank 0 has '  max_steps: 6'" <<<"$out"; then
  echo "FAIL: differing configs across ranks not refused clearly (exit $rc):"; echo "$out"; fail=1
fi

[ $fail -eq 0 ] && echo "ok: data-parallel losses match" || echo "FAILED"
exit $fail
