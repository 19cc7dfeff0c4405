#!/usr/bin/env bash
# hfrun under a real single-node Slurm (cluster/slurm/local-slurm.sh starts munged, slurmctld and
# slurmd under a temp dir and stops them after):
#  1. sbatch of cluster/slurm/train-1node.sbatch (srun --mpi=pmix, 2 tasks) completes and logs the
#     losses of the same config under plain mpirun (`hfrun -np 2`).
#  2. `srun -n 2 hfrun train` works the same (rank discovery from PMIx/Slurm variables).
#  3. Preemption: `scancel --signal=TERM` mid-run reaches the ranks; they agree on a step, commit
#     its checkpoint and exit 3; the script requeues the job; the requeued run (SLURM_RESTART_COUNT
#     1) resumes from that checkpoint with no extra flags, appends to the same metrics.jsonl and
#     ends with the losses of an uninterrupted run.
#  4. `hfrun -np 2` (mpirun) inside an allocation works too, and the batch script's SIGUSR1
#     reaches the ranks through hfrun's launcher (a graceful stop, exit 3).
# Prints the timings: sbatch to the first step, the signal to the committed checkpoint, requeue
# to the resumed first step.
# Usage: test_slurm.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON SOURCE_DIR
# Exit 77 (skipped) when Slurm is not installed or this is not root (CI installs it and is root).
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$(realpath "$1")"
GPT2="$(realpath "$2")"
SRC="$3"
LOCAL_SLURM="$SRC/cluster/slurm/local-slurm.sh"
if [ "$(id -u)" -ne 0 ] || ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  echo "SKIP: needs root and Debian's slurmctld, slurmd, slurm-client and munge (scripts/install-deps.sh)"
  exit 77
fi
TMP="$(mktemp -d)"
chmod 755 "$TMP"  # job processes and munged's clients reach files below it
SLURM_DIR="$TMP/slurm"
cleanup() {
  "$LOCAL_SLURM" stop "$SLURM_DIR" > /dev/null 2>&1
  pkill -9 -f "$TMP/" 2> /dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail=0
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

t0=$(now)
if ! "$LOCAL_SLURM" start "$SLURM_DIR" > "$TMP/slurm-start.log" 2>&1; then
  echo "FAIL: local Slurm did not start:"; cat "$TMP/slurm-start.log"; exit 1
fi
# shellcheck disable=SC1091
. "$SLURM_DIR/env.sh"
export HFRUN OMP_NUM_THREADS=1
echo "local Slurm up in $(elapsed "$t0" "$(now)") s"

tiny_corpus "$TMP/f.txt"
cfg() {  # cfg OUTPUT_DIR MAX_STEPS
  tiny_cfg "$1" "$TMP/f.txt" "$2" "scheduler: {type: cosine, warmup_steps: 10}" \
    "checkpoint: {every: 500, keep: 2}"
}
same_losses() {  # same_losses WHAT REF_METRICS METRICS
  if ! diff <(losses "$2") <(losses "$3") > /dev/null || [ "$(losses "$3" | wc -l)" -eq 0 ]; then
    echo "FAIL: $1: losses differ from the mpirun run:"
    paste <(losses "$2") <(losses "$3") | head -20; fail=1
  fi
}
job_state() { scontrol show job "$1" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | head -n1 | cut -d= -f2; }
# wait_job JOBID SECONDS: until the job has left the queue or completed
wait_job() {
  for _ in $(seq $(($2 * 10 * TEST_SLOW))); do
    case "$(job_state "$1")" in COMPLETED | FAILED | CANCELLED | TIMEOUT | "") return 0 ;; esac
    sleep 0.1
  done
  return 1
}

# The reference: plain mpirun, 2 ranks.
cfg "$TMP/ref" 40 > "$TMP/ref.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/ref.yaml" > "$TMP/ref.log" 2>&1 || { echo "FAIL: mpirun reference"; cat "$TMP/ref.log"; fail=1; }

# 1. sbatch of the project's own script.
cfg "$TMP/sb" 40 > "$TMP/sb.yaml"
t0=$(now)
job=$(sbatch --parsable --chdir="$TMP" -o "$TMP/sb.out" --ntasks-per-node=2 --cpus-per-task=1 \
  "$SRC/cluster/slurm/train-1node.sbatch" "$TMP/sb.yaml")
if wait_for "$TMP/sb/metrics.jsonl" '"step": 1' 60; then
  echo "sbatch to the first step: $(elapsed "$t0" "$(now)") s"
fi
wait_job "$job" 120 || { echo "FAIL: sbatch job $job did not finish"; fail=1; }
state=$(scontrol show job "$job" | grep -o 'ExitCode=[0-9:]*' | head -n1)
if [ "$state" != "ExitCode=0:0" ] || [ ! -f "$TMP/sb/final/model.safetensors" ]; then
  echo "FAIL: sbatch job $job: $state"; cat "$TMP/sb.out"; fail=1
fi
same_losses "sbatch train-1node.sbatch" "$TMP/ref/metrics.jsonl" "$TMP/sb/metrics.jsonl"
grep -q "data parallel: 2 ranks" "$TMP/sb.out" || { echo "FAIL: the sbatch job did not run 2 ranks"; cat "$TMP/sb.out"; fail=1; }

# 2. srun -n 2 of hfrun.
cfg "$TMP/srun" 40 > "$TMP/srun.yaml"
if ! srun -n 2 --mpi=pmix "$HFRUN" train "$TMP/srun.yaml" > "$TMP/srun.log" 2>&1; then
  echo "FAIL: srun -n 2 hfrun train"; cat "$TMP/srun.log"; fail=1
fi
same_losses "srun -n 2" "$TMP/ref/metrics.jsonl" "$TMP/srun/metrics.jsonl"
# Each task finds its place from PMIx/Slurm, as `hfrun env` shows.
srun -n 2 --mpi=pmix "$HFRUN" env > "$TMP/env.log" 2>&1
for r in 0 1; do
  grep -qE "^launch: +rank $r of 2 \(local rank $r of 2\) via srun, master " "$TMP/env.log" ||
    { echo "FAIL: srun -n 2 hfrun env does not show rank $r of 2 via srun"; cat "$TMP/env.log"; fail=1; }
done

# 3. Preemption: scancel --signal=TERM mid-run, then the requeued job resumes.
cfg "$TMP/ref_long" 1500 > "$TMP/ref_long.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/ref_long.yaml" > "$TMP/ref_long.log" 2>&1 || { echo "FAIL: mpirun long reference"; fail=1; }
cfg "$TMP/pre" 1500 > "$TMP/pre.yaml"
job=$(sbatch --parsable --chdir="$TMP" -o "$TMP/pre.out" --ntasks-per-node=2 --cpus-per-task=1 \
  "$SRC/cluster/slurm/train-1node.sbatch" "$TMP/pre.yaml")
wait_for "$TMP/pre/metrics.jsonl" '"step": 20,' 90 || { echo "FAIL: the preemption job did not reach step 20"; cat "$TMP/pre.out"; fail=1; }
t0=$(now)
scancel --signal=TERM "$job"
if wait_for "$TMP/pre.out" "stopped after step" 60; then
  echo "scancel --signal=TERM to the committed checkpoint: $(elapsed "$t0" "$(now)") s"
fi
t1=$(now)
if wait_for "$TMP/pre.out" "resuming from" 90; then
  echo "requeue to the resumed run: $(elapsed "$t1" "$(now)") s"
fi
wait_job "$job" 180 || { echo "FAIL: the requeued job $job did not finish"; fail=1; }
stop_line=$(grep -m1 "stopped after step" "$TMP/pre.out")
step=$(sed -E 's/.*stopped after step ([0-9]+) on SIGTERM.*/\1/' <<<"$stop_line")
ckpt=$(printf 'step-%08d' "$step" 2> /dev/null)
if [ -z "$stop_line" ] || ! grep -q "requeueing job $job" "$TMP/pre.out" || \
   ! grep -q "job $job restart 1 " "$TMP/pre.out" || \
   ! grep -q "resuming from .*$ckpt (step $step)" "$TMP/pre.out"; then
  echo "FAIL: SIGTERM -> checkpoint -> exit 3 -> requeue -> resume did not happen"; cat "$TMP/pre.out"; fail=1
fi
if [ "$(scontrol show job "$job" | grep -o 'ExitCode=[0-9:]*' | head -n1)" != "ExitCode=0:0" ] ||
   [ ! -f "$TMP/pre/final/model.safetensors" ]; then
  echo "FAIL: the requeued job did not finish cleanly"; scontrol show job "$job"; cat "$TMP/pre.out"; fail=1
fi
same_losses "stopped at step $step and requeued" "$TMP/ref_long/metrics.jsonl" "$TMP/pre/metrics.jsonl"
echo "preempted at step $step: $(grep -c . "$TMP/pre/metrics.jsonl") metrics lines after the resume"

# 4. mpirun inside an allocation: `hfrun -np 2` in a batch script; the script's SIGUSR1
# (scancel --batch) is forwarded by hfrun's launcher to the ranks: a graceful stop.
cfg "$TMP/mp" 100000 > "$TMP/mp.yaml"
cat > "$TMP/mp.sbatch" <<EOF
#!/bin/bash
"$HFRUN" -np 2 "$TMP/mp.yaml" &
pid=\$!
trap 'kill -USR1 \$pid' USR1
while kill -0 \$pid 2> /dev/null; do wait \$pid; done
wait \$pid
echo "hfrun exited with \$?"
EOF
job=$(sbatch --parsable --chdir="$TMP" -o "$TMP/mp.out" -n 2 "$TMP/mp.sbatch")
wait_for "$TMP/mp/metrics.jsonl" '"step": 5,' 90 || { echo "FAIL: mpirun in an allocation did not start"; cat "$TMP/mp.out"; fail=1; }
scancel --batch --signal=USR1 "$job"
wait_job "$job" 60 || { echo "FAIL: the mpirun job did not stop"; fail=1; }
if ! grep -q "hfrun exited with 3" "$TMP/mp.out" || ! grep -q "^hfrun: job stopped after step [0-9]* on SIGUSR1 to the launcher" "$TMP/mp.out"; then
  echo "FAIL: SIGUSR1 to hfrun -np 2 inside an allocation did not stop it gracefully"; cat "$TMP/mp.out"; fail=1
fi

[ $fail -eq 0 ] && echo "ok: hfrun under Slurm (sbatch, srun, preemption + requeue, mpirun in an allocation)" || echo "FAILED"
exit $fail
