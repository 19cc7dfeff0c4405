#!/usr/bin/env bash
# hfrun::Accelerator with tensor parallelism, from a program that embeds the library
# (accelerator_llama.cpp: a tiny Llama from models/ in a hand-written loop): tensor parallel 2 on
# 2 ranks, tensor parallel 2 x data parallel 2 with ZeRO-1 on 4 ranks, and ZeRO-3 on 2 ranks log
# the losses of one process (relative 1e-5), with gradient accumulation; a tensor-parallel
# checkpoint resumes on one process and on ZeRO-3 ranks with the uninterrupted losses; the
# models they save (Accelerator::save_model: tensor-parallel parts assembled, ZeRO-3 shards
# gathered) hold the whole tensors of one process's, under HF names.
# Usage: test_accelerator_llama.sh PATH/TO/accelerator_llama   (env: MPIEXEC)
set -uo pipefail
# shellcheck source=tests/lib/train_job.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/train_job.sh"
APP="$1"
MPIRUN="${MPIEXEC:-mpirun}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)

run() {  # run NAME NP ARGS...
  local name="$1" np="$2"
  shift 2
  if ! timeout 120 "$MPIRUN" "${mpi_flags[@]}" -x OMP_NUM_THREADS=1 -np "$np" "$APP" "$@" > "$TMP/$name.log" 2>&1; then
    echo "FAIL: $name (-np $np $*) failed:"; cat "$TMP/$name.log"; fail=1
  fi
  losses "$TMP/$name.log" > "$TMP/$name.losses"
}
same() {  # same REFERENCE NAME N: the last N losses of REFERENCE equal NAME's
  paste <(tail -n "$3" "$TMP/$1.losses") "$TMP/$2.losses" > "$TMP/pairs"
  if [ "$(wc -l < "$TMP/pairs")" -ne "$3" ] || ! awk '{ d = $1 - $2; if (d < 0) d = -d;
        if ($2 == "" || d > 1e-5 * ($1 < 0 ? -$1 : $1)) bad = 1 } END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: $2: losses differ from $1:"; cat "$TMP/pairs"; fail=1
  else
    echo "ok: $2"
  fi
}

run np1 1 --accum 2 --save-model "$TMP/model_np1"
run tp2 2 --tp 2 --accum 2 --save-model "$TMP/model_tp2"
run tp2_dp2_z1 4 --tp 2 --zero-stage 1 --accum 2
run z3 2 --zero-stage 3 --accum 2 --save-model "$TMP/model_z3"
for r in tp2 tp2_dp2_z1 z3; do same np1 "$r" 6; done
for r in tp2 z3; do
  if python3 "$(dirname "${BASH_SOURCE[0]}")/../lib/same_safetensors.py" \
       "$TMP/model_np1/model.safetensors" "$TMP/model_$r/model.safetensors" 1e-4 &&
     [ -f "$TMP/model_$r/config.json" ]; then
    echo "ok: $r saves the whole model"
  else
    echo "FAIL: $r: save_model differs from one process's"; fail=1
  fi
done
awk 'NR == 1 { first = $1 } { last = $1 } END { exit !(last < first) }' "$TMP/np1.losses" ||
  { echo "FAIL: the loss does not fall"; cat "$TMP/np1.losses"; fail=1; }

run save 2 --tp 2 --accum 2 --steps 3 --ckpt "$TMP/ckpt" --save-at 3
run re_np1 1 --accum 2 --ckpt "$TMP/ckpt" --resume
run re_z3 2 --zero-stage 3 --accum 2 --ckpt "$TMP/ckpt" --resume
for r in re_np1 re_z3; do
  grep -q "resumed at step 3" "$TMP/$r.log" || { echo "FAIL: $r did not resume"; cat "$TMP/$r.log"; fail=1; }
  same np1 "$r" 3
done

# Tensor parallelism needs its ranks.
"$APP" --tp 2 > "$TMP/bad.log" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "tensor_parallel" "$TMP/bad.log"; then
  echo "FAIL: --tp 2 on one process: exit $rc (want 2 naming tensor_parallel)"; cat "$TMP/bad.log"; fail=1
fi

[ $fail -eq 0 ] && echo "ok: Accelerator tensor parallelism matches one process" || echo "FAILED"
exit $fail
