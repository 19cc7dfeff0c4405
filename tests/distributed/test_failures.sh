#!/usr/bin/env bash
# Failure behaviour of `hfrun -np 2` with real ranks:
#  1. kill -9 of one rank mid-run ends the whole job non-zero within 30 s; the launcher's report
#     names that rank, its host, its pid and the signal first; no process of the job survives.
#  2. a rank that throws: the report quotes its error.
#  3. SIGTERM to the launcher stops every rank gracefully: a committed checkpoint, exit 3.
#  4. --max-restarts 1: the job restarts from the last committed checkpoint after a rank fails
#     and finishes with the losses of an uninterrupted run.
#  5. A checkpoint write failing on one rank commits nothing.
#  6. A SIGTERM reaching one rank stops every rank at the same step; rerunning resumes exactly.
#  7. SIGKILL of the launcher: mpirun and both ranks are gone at once (CONTRACT.md: within 2 s),
#     not training on and writing checkpoints into output_dir.
#  8. A non-finite loss on one rank: every rank skips the step together and the run goes on;
#     train.max_skipped_steps skips in a row stop it with exit 1 and a checkpoint of the last
#     good step, from which the same command resumes.
#  9. Hang forensics: a rank that never enters the next collective (it sleeps, it is
#     SIGSTOPped, or it is stuck writing a checkpoint file): the job fails within distributed.timeout_s (+ 1.5 s for the flight records),
#     and the report names the op and sequence number that timed out, the rank that never
#     entered it with what it is doing (its phase), or that it is stopped, and each rank's
#     flight record.
# Usage: test_failures.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
cleanup() { pkill -9 -f "$TMP/" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
fail=0

tiny_corpus "$TMP/f.txt"
cfg() { tiny_cfg "$1" "$TMP/f.txt" "$2" "checkpoint: {every: 2, keep: 3}"; }  # cfg OUTPUT_DIR MAX_STEPS
job_alive() { pgrep -f "$TMP/$1.yaml" > /dev/null; }
rank_pid() {  # rank_pid CONFIG_NAME RANK: the pid of that rank's hfrun process
  for p in $(pgrep -f "hfrun train $TMP/$1.yaml"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"; return 0
    fi
  done
  return 1
}

# 1. kill -9 of rank 1.
cfg "$TMP/kill" 100000 > "$TMP/kill.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/kill.yaml" > "$TMP/kill.log" 2>&1 &
launcher=$!
if ! wait_for "$TMP/kill/metrics.jsonl" '"step": 2' 60; then
  echo "FAIL: the job did not reach step 2"; cat "$TMP/kill.log"; fail=1
fi
victim=$(rank_pid kill 1)
start=$(date +%s)
kill -9 "$victim"
for _ in $(seq 300); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
wait $launcher
rc=$?
took=$(( $(date +%s) - start ))
if kill -0 $launcher 2>/dev/null; then
  echo "FAIL: the launcher still runs 30 s after kill -9 of rank 1"; fail=1
fi
[ $rc -ne 0 ] || { echo "FAIL: kill -9 of a rank: exit 0"; fail=1; }
report=$(grep -m1 '^hfrun: job failed' "$TMP/kill.log")
if ! grep -qE "^hfrun: job failed: rank 1 \(host [^,]+, pid $victim\): signal 9 \(Killed\)" <<<"$report"; then
  echo "FAIL: kill -9 report does not name rank 1, its host, pid $victim and signal 9: '$report'"
  cat "$TMP/kill.log"; fail=1
fi
sleep 1
if job_alive kill; then echo "FAIL: processes of the killed job survive:"; pgrep -af "$TMP/kill.yaml"; fail=1; fi
echo "kill -9: job ended in ${took}s with exit $rc: $report"

# 2. A rank that throws: the report quotes its error.
cfg "$TMP/throw" 6 > "$TMP/throw.yaml"
HFRUN_FAULT="1:3:$TMP/throw.marker" "$HFRUN" -np 2 --oversubscribe "$TMP/throw.yaml" > "$TMP/throw.log" 2>&1
rc=$?
report=$(grep -m1 '^hfrun: job failed' "$TMP/throw.log")
if [ $rc -eq 0 ] || ! grep -qE "^hfrun: job failed: rank 1 \(host [^,]+, pid [0-9]+\): exit 1: injected fault \(HFRUN_FAULT\) after step 3" <<<"$report"; then
  echo "FAIL: a throwing rank's error is not quoted (exit $rc): '$report'"; cat "$TMP/throw.log"; fail=1
fi
grep -q '^\[rank 0\] step 1/6' "$TMP/throw.log" || { echo "FAIL: output lines are not rank-prefixed"; cat "$TMP/throw.log"; fail=1; }

# 3. SIGTERM to the launcher is a graceful stop: every rank stops after its current step, that
# step's checkpoint is committed, hfrun exits 3 with a report naming it, and nothing survives.
cfg "$TMP/term" 100000 > "$TMP/term.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/term.yaml" > "$TMP/term.log" 2>&1 &
launcher=$!
wait_for "$TMP/term/metrics.jsonl" '"step": 1' 60 || { echo "FAIL: term job did not start"; fail=1; }
start=$(date +%s%N)
kill -TERM $launcher
for _ in $(seq 300); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
wait $launcher
rc=$?
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
report=$(grep -m1 '^hfrun: job stopped' "$TMP/term.log")
re='^hfrun: job stopped after step ([0-9]+) on SIGTERM to the launcher: checkpoint (.*) committed'
if [ $rc -ne 3 ] || ! [[ "$report" =~ $re ]]; then
  echo "FAIL: SIGTERM to the launcher: exit $rc (want 3), report '$report'"; cat "$TMP/term.log"; fail=1
elif [ ! -f "${BASH_REMATCH[2]}/manifest.json" ] || \
     [ "$(basename "${BASH_REMATCH[2]}")" != "$(printf 'step-%08d' "${BASH_REMATCH[1]}")" ]; then
  echo "FAIL: the stop's checkpoint ${BASH_REMATCH[2]} is not committed"; ls -R "$TMP/term"; fail=1
fi
# The stop has its summary: printed, and summary.json saying so, with both ranks' memory.
grep -q '^\[rank 0\] trained [0-9]* steps in ' "$TMP/term.log" &&
  grep -q '"stopped_by_signal": true' "$TMP/term/summary.json" &&
  [ "$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["peak_mem_mb"]))' "$TMP/term/summary.json")" = 2 ] ||
  { echo "FAIL: no summary of the stopped run"; cat "$TMP/term/summary.json"; fail=1; }
sleep 1
if job_alive term; then echo "FAIL: ranks survive SIGTERM to the launcher:"; pgrep -af "$TMP/term.yaml"; fail=1; fi
echo "SIGTERM to the launcher: stopped with a committed checkpoint in ${took_ms} ms: $report"

# 3b. SIGTERM while the ranks are still starting (mpirun runs, no step yet): the launcher holds
# it until every rank has started (a rank still loading would die of SIGUSR1), then the job stops
# gracefully after its first step.
cfg "$TMP/early" 100000 > "$TMP/early.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/early.yaml" > "$TMP/early.log" 2>&1 &
launcher=$!
for _ in $(seq 200); do pgrep -f "mpirun.*$TMP/early.yaml" > /dev/null && break; sleep 0.01; done
kill -TERM $launcher
for _ in $(seq 600); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
wait $launcher
rc=$?
if [ $rc -ne 3 ] || ! grep -q "^hfrun: job stopped after step [0-9]* on SIGTERM to the launcher" "$TMP/early.log"; then
  echo "FAIL: SIGTERM during rank start-up: exit $rc (want 3 and a stop report)"; cat "$TMP/early.log"; fail=1
fi

# 4. --max-restarts: rank 0 fails after step 5 (checkpoint at 4); the restart resumes from step 4
# and the losses equal an uninterrupted run.
cfg "$TMP/ref" 8 > "$TMP/ref.yaml"
cfg "$TMP/restart" 8 > "$TMP/restart.yaml"
"$HFRUN" -np 2 --oversubscribe "$TMP/ref.yaml" > "$TMP/ref.log" 2>&1 || { echo "FAIL: reference run"; cat "$TMP/ref.log"; fail=1; }
HFRUN_FAULT="0:5:$TMP/restart.marker" "$HFRUN" -np 2 --oversubscribe --max-restarts 1 "$TMP/restart.yaml" > "$TMP/restart.log" 2>&1
rc=$?
if [ $rc -ne 0 ] || ! grep -q "restarting the job (restart 1 of 1)" "$TMP/restart.log" || \
   ! grep -q "resuming from .*step-00000004" "$TMP/restart.log"; then
  echo "FAIL: --max-restarts did not restart and resume (exit $rc)"; cat "$TMP/restart.log"; fail=1
fi
if ! diff <(losses "$TMP/ref/metrics.jsonl") <(losses "$TMP/restart/metrics.jsonl") > /dev/null; then
  echo "FAIL: restarted run's losses differ from the uninterrupted run:"
  paste <(losses "$TMP/ref/metrics.jsonl") <(losses "$TMP/restart/metrics.jsonl"); fail=1
fi

# 5. A checkpoint write that fails on one rank commits nothing: the job fails naming that rank,
# and no step directory (complete-looking or temporary) is left.
cfg "$TMP/ckfail" 8 > "$TMP/ckfail.yaml"
HFRUN_FAULT_CHECKPOINT_RANK=1 "$HFRUN" -np 2 --oversubscribe "$TMP/ckfail.yaml" > "$TMP/ckfail.log" 2>&1
rc=$?
if [ $rc -eq 0 ] || ! grep -q "checkpoint step 2 not committed (files not written: rank 1: cannot write .*injected fault" "$TMP/ckfail.log"; then
  echo "FAIL: a failed checkpoint write on rank 1 was not reported (exit $rc)"; cat "$TMP/ckfail.log"; fail=1
fi
left=$(ls "$TMP/ckfail/checkpoints" 2>/dev/null | tr '\n' ' ')
if [ -n "$left" ]; then echo "FAIL: a failed checkpoint left '$left'"; fail=1; fi

# 6. A SIGTERM that reaches one rank only (as Slurm signals tasks): rank 1 signals itself after
# step 3 (HFRUN_FAULT_SIGNAL); every rank stops after step 3 with step-00000003 committed; the
# same command resumes from it and ends with the losses of the uninterrupted run (test 4's ref).
cfg "$TMP/preempt" 8 > "$TMP/preempt.yaml"
HFRUN_FAULT_SIGNAL="1:3:15" "$HFRUN" -np 2 --oversubscribe "$TMP/preempt.yaml" > "$TMP/preempt.log" 2>&1
rc=$?
if [ $rc -ne 3 ] || ! grep -q "^hfrun: job stopped after step 3 on SIGTERM: checkpoint .*step-00000003 committed" "$TMP/preempt.log" || \
   [ ! -f "$TMP/preempt/checkpoints/step-00000003/manifest.json" ] || [ -d "$TMP/preempt/final" ]; then
  echo "FAIL: a SIGTERM to rank 1 after step 3 did not stop the job at step 3 (exit $rc)"; cat "$TMP/preempt.log"; fail=1
fi
"$HFRUN" -np 2 --oversubscribe "$TMP/preempt.yaml" > "$TMP/preempt2.log" 2>&1 || { echo "FAIL: resume after the stop"; cat "$TMP/preempt2.log"; fail=1; }
grep -q "resuming from .*step-00000003" "$TMP/preempt2.log" || { echo "FAIL: the rerun did not resume from step 3"; cat "$TMP/preempt2.log"; fail=1; }
if ! diff <(losses "$TMP/ref/metrics.jsonl") <(losses "$TMP/preempt/metrics.jsonl") > /dev/null; then
  echo "FAIL: stopped + resumed losses differ from the uninterrupted run:"
  paste <(losses "$TMP/ref/metrics.jsonl") <(losses "$TMP/preempt/metrics.jsonl"); fail=1
fi

# 7. SIGKILL of the launcher (the job's head killed by an OOM killer or a scheduler).
cfg "$TMP/head" 100000 > "$TMP/head.yaml"
# Quiet ranks (nothing logged after step 1): mpirun, writing nothing, would not notice the
# launcher's end through its pipes.
"$HFRUN" -np 2 --oversubscribe "$TMP/head.yaml" --set train.log_every=100000 > "$TMP/head.log" 2>&1 &
launcher=$!
wait_for "$TMP/head/metrics.jsonl" '"step": 1' 60 || { echo "FAIL: head job did not start"; fail=1; }
n=$(pgrep -f "^[^ ]*hfrun train $TMP/head.yaml" | wc -l)  # the ranks, not mpirun
[ "$n" -eq 2 ] || { echo "FAIL: head job: $n ranks, not 2:"; pgrep -af "$TMP/head.yaml"; fail=1; }
kill -9 $launcher
gone=""
for i in $(seq 20); do  # CONTRACT.md: within 2 s
  if ! job_alive head; then gone=$i; break; fi
  sleep 0.1
done
if [ -z "$gone" ]; then
  echo "FAIL: 2 s after SIGKILL of the launcher, its job still runs:"; pgrep -af "$TMP/head.yaml"; fail=1
else
  echo "SIGKILL of the launcher: mpirun and the ranks gone within $((gone * 100)) ms"
fi

# 8. Non-finite guard: rank 1's loss is infinite in its 3rd and 4th step attempts.
cfg "$TMP/nonfinite" 6 > "$TMP/nonfinite.yaml"
HFRUN_FAULT_NONFINITE=1:3:2 "$HFRUN" -np 2 --oversubscribe "$TMP/nonfinite.yaml" \
  --set train.max_skipped_steps=3 > "$TMP/nonfinite.log" 2>&1
rc=$?
skips=$(grep -c '^\[rank 0\] skipped step 3: loss inf on rank 1 ([12] in a row' "$TMP/nonfinite.log")
jskips=$(grep -c '"step": 3, "skipped": "loss inf on rank 1"' "$TMP/nonfinite/metrics.jsonl")
trained=$(grep -c '"loss"' "$TMP/nonfinite/metrics.jsonl")
if [ $rc -ne 0 ] || [ "$skips" -ne 2 ] || [ "$jskips" -ne 2 ] || [ "$trained" -ne 6 ]; then
  echo "FAIL: two skipped steps: exit $rc, $skips/$jskips skip lines, $trained steps"
  cat "$TMP/nonfinite.log"; fail=1
fi
# ... and the same loss from step 4 on: three skips in a row (the maximum) stop the run.
cfg "$TMP/diverged" 8 > "$TMP/diverged.yaml"
HFRUN_FAULT_NONFINITE=0:4:100 "$HFRUN" -np 2 --oversubscribe "$TMP/diverged.yaml" \
  --set train.max_skipped_steps=3 > "$TMP/diverged.log" 2>&1
rc=$?
msg="stopped: 3 steps in a row had a non-finite loss or gradient norm (the last: step 4, loss inf on rank 0); the last good step is 3; checkpoint .*step-00000003 holds the last good step"
if [ $rc -ne 1 ] || ! grep -q "^hfrun: job failed: rank [01] .*$msg" "$TMP/diverged.log" || \
   [ ! -f "$TMP/diverged/checkpoints/step-00000003/manifest.json" ] || [ -d "$TMP/diverged/final" ]; then
  echo "FAIL: persistent non-finite loss: exit $rc"; cat "$TMP/diverged.log"; fail=1
fi
"$HFRUN" -np 2 --oversubscribe "$TMP/diverged.yaml" > "$TMP/diverged2.log" 2>&1 || {
  echo "FAIL: resume after the non-finite stop"; cat "$TMP/diverged2.log"; fail=1; }
grep -q "resuming from .*step-00000003 (step 3)" "$TMP/diverged2.log" || {
  echo "FAIL: the rerun did not resume from the last good step"; cat "$TMP/diverged2.log"; fail=1; }

# ... with loss scaling (fp16): an overflow in rank 1's gradients only (its 3rd step) makes no
# update on either rank, backs the scale off and counts the step, under DDP and ZeRO-2 alike.
for z in 0 2; do
  cfg "$TMP/fp16z$z" 5 > "$TMP/fp16z$z.yaml"
  HFRUN_FAULT_NONFINITE=1:3:1:grad "$HFRUN" -np 2 --oversubscribe "$TMP/fp16z$z.yaml" \
    --set train.mixed_precision=fp16 --set train.grad_scaler.init_scale=256 \
    --set distributed.zero_stage=$z > "$TMP/fp16z$z.log" 2>&1
  rc=$?
  over=$(grep -c '^\[rank 0\] step 3: gradients overflowed at loss scale 256: no update; the scale is now 128' "$TMP/fp16z$z.log")
  jover=$(grep -c '"step": 3, .*"loss_scale": 256, "update_skipped": true' "$TMP/fp16z$z/metrics.jsonl")
  after=$(grep -c '"step": 5, .*"loss_scale": 128}' "$TMP/fp16z$z/metrics.jsonl")
  if [ $rc -ne 0 ] || [ "$over" -ne 1 ] || [ "$jover" -ne 1 ] || [ "$after" -ne 1 ] || \
     ! grep -q '"overflow_steps": 1' "$TMP/fp16z$z/summary.json"; then
    echo "FAIL: fp16 overflow on rank 1, zero_stage $z: exit $rc, $over/$jover/$after"
    cat "$TMP/fp16z$z.log"; tail -3 "$TMP/fp16z$z/metrics.jsonl"; fail=1
  fi
done
losses_of() { sed -n 's/.*"loss": \([0-9.]*\).*/\1/p' "$1"; }
if ! paste <(losses_of "$TMP/fp16z0/metrics.jsonl") <(losses_of "$TMP/fp16z2/metrics.jsonl") |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1 || NF != 2) bad = 1 } END { exit bad }'; then
  echo "FAIL: fp16 with an overflow: DDP and ZeRO-2 logged different losses"
  paste "$TMP/fp16z0/metrics.jsonl" "$TMP/fp16z2/metrics.jsonl"; fail=1
fi

# 9. A rank that sleeps after step 3, one that is stopped, and one stuck in a checkpoint write
#    (a hung filesystem: it sleeps inside its first safetensors write, at step 2's checkpoint).
for kind in hang stop stall; do
  cfg "$TMP/$kind" 100 > "$TMP/$kind.yaml"
  unset HFRUN_FAULT_HANG HFRUN_FAULT_SIGNAL HFRUN_FAULT_STALL
  extra=()
  if [ $kind = hang ]; then
    export HFRUN_FAULT_HANG=1:3:120
    culprit='never entered it \(phase "injected hang"\)'
  elif [ $kind = stop ]; then
    export HFRUN_FAULT_SIGNAL=1:3:19
    culprit='was stopped \(SIGSTOP or a debugger\) when the collective timed out'
  else
    export HFRUN_FAULT_STALL=1:safetensors.chunk:120
    culprit='never entered it \(phase "checkpoint save"\)'
    extra=(--set distributed.zero_stage=1)  # every rank writes its optimizer shard
  fi
  start=$(date +%s)
  "$HFRUN" -np 2 --oversubscribe "$TMP/$kind.yaml" --set distributed.timeout_s=4 "${extra[@]}" \
    > "$TMP/$kind.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  unset HFRUN_FAULT_HANG HFRUN_FAULT_SIGNAL HFRUN_FAULT_STALL
  report=$(grep -m1 '^hfrun: job failed' "$TMP/$kind.log")
  op='rank 0: [a-z_]+ #[0-9]+ \([0-9]+ bytes, group [^)]+\) timed out after 4s'
  if [ $rc -eq 0 ] || [ $took -gt 60 ] || \
     ! grep -qE "^hfrun: job failed: rank 0 \(host [^,]+, pid [0-9]+\): exit 1: .*$op.*; rank 1 \(host [^,]+, pid [0-9]+\) $culprit" <<<"$report" || \
     ! grep -qE '^hfrun: flight record of rank 0 \(host [^,]+, pid [0-9]+\): .*in [a-z_]+ #[0-9]+ \(issued in "[^"]*"\) for [0-9.]+ s' "$TMP/$kind.log"; then
    echo "FAIL: $kind: exit $rc after $took s, report: '$report'"; cat "$TMP/$kind.log"; fail=1
  else
    echo "$kind: failed after $took s: $report"
  fi
  pkill -9 -f "$TMP/$kind.yaml" 2>/dev/null
done

[ $fail -eq 0 ] && echo "ok: failures end the job with a clear report" || echo "FAILED"
exit $fail
