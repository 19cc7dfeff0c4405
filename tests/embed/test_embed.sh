#!/usr/bin/env bash
# hfrun as an installed library: `cmake --install` of this build into a temporary prefix, then
# examples/embed (a separate CMake project: find_package(hfrun), hfrun::hfrun) configured and
# built against it with Ninja, and run under mpirun:
#  - 2 ranks log the losses of 1 process (relative 1e-5) with zero_stage 0, 1, 2 and 3;
#  - a 2-rank ZeRO-1 checkpoint resumes on 1 process, on 2 ranks with ZeRO-2 and on 2 ranks with
#    ZeRO-3 with the uninterrupted run's losses;
#  - the loss falls (the program exits 1 otherwise).
# Usage: test_embed.sh HFRUN_BUILD_DIR HFRUN_SOURCE_DIR   (env: MPIEXEC, CMAKE)
set -uo pipefail
BUILD="$1"
SRC="$2"
CMAKE="${CMAKE:-cmake}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail=0
die() { echo "FAIL: $*"; exit 1; }

PREFIX="$TMP/prefix"
"$CMAKE" --install "$BUILD" --prefix "$PREFIX" > "$TMP/install.log" 2>&1 ||
  { cat "$TMP/install.log"; die "cmake --install failed"; }
for f in include/hfrun/hfrun.h include/hfrun/train/accelerator.h lib/cmake/hfrun/hfrunConfig.cmake \
         lib/cmake/hfrun/hfrunConfigVersion.cmake lib/cmake/hfrun/hfrunTargets.cmake \
         lib/libhfrun_train.a lib/libhfrun_tensor.a; do
  [ -f "$PREFIX/$f" ] || die "not installed: $f"
done
# Every installed header's project includes are installed too, and none includes a foreign
# library's header (mpi.h, oneDNN, CUDA, OpenMP).
while IFS= read -r h; do
  while IFS= read -r inc; do
    [ -f "$PREFIX/include/hfrun/$inc" ] || [ -f "$(dirname "$h")/$inc" ] ||
      { echo "FAIL: ${h#$PREFIX/} includes \"$inc\", which is not installed"; fail=1; }
  done < <(sed -nE 's/^\s*#include "([^"]+)".*/\1/p' "$h")
done < <(find "$PREFIX/include/hfrun" -name '*.h')
if grep -rlE '#include\s*[<"](mpi\.h|nccl\.h|oneapi/dnnl/|dnnl\.hpp|cuda_runtime\.h|omp\.h)' \
     "$PREFIX/include"; then
  echo "FAIL: an installed header includes a foreign library header (above)"; fail=1
fi

launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
"$CMAKE" -G Ninja -S "$SRC/examples/embed" -B "$TMP/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DEMBED_WERROR=ON "${launcher[@]}" > "$TMP/configure.log" 2>&1 ||
  { cat "$TMP/configure.log"; die "configuring examples/embed against the install failed"; }
"$CMAKE" --build "$TMP/build" > "$TMP/build.log" 2>&1 ||
  { cat "$TMP/build.log"; die "building examples/embed against the install failed"; }
APP="$TMP/build/embed_regression"

MPIRUN="${MPIEXEC:-mpirun}"
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
run() {  # run NAME NP ARGS...: the main process's log in $TMP/NAME.log
  local name="$1" np="$2"
  shift 2
  if ! timeout 120 "$MPIRUN" "${mpi_flags[@]}" -x OMP_NUM_THREADS=1 -np "$np" "$APP" "$@" \
       > "$TMP/$name.log" 2>&1; then
    echo "FAIL: $name (-np $np $*) failed:"; cat "$TMP/$name.log"; fail=1
  fi
}
# "step loss" per logged step.
losses() { sed -nE 's/^\{"step": ([0-9]+), "loss": ([-0-9.eE+]+).*/\1 \2/p' "$1"; }
# same REFERENCE NAME: NAME's steps are logged with REFERENCE's losses (relative 1e-5).
same() {
  join <(losses "$TMP/$1.log" | sort -k1,1) <(losses "$TMP/$2.log" | sort -k1,1) > "$TMP/pairs"
  local expected
  expected=$(losses "$TMP/$2.log" | wc -l)
  if [ "$expected" -eq 0 ] || [ "$(wc -l < "$TMP/pairs")" -ne "$expected" ] ||
     ! awk '{ d = $2 - $3; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r;
              if (r > 1e-5) bad = 1 } END { exit bad }' "$TMP/pairs"; then
    echo "FAIL: $2 does not log the losses of $1 (step $1 $2):"; cat "$TMP/pairs"; fail=1
  else
    echo "ok: $2 logs the losses of $1 ($expected steps)"
  fi
}

run ref 1 --steps 12
cat "$TMP/ref.log"
for stage in 0 1 2 3; do
  run np2_z$stage 2 --steps 12 --zero-stage $stage
  same ref np2_z$stage
done
# Resume: saved by 2 ranks with ZeRO-1 at step 5, continued with other layouts.
run save 2 --steps 5 --zero-stage 1 --ckpt "$TMP/ckpt" --save-every 5
[ -f "$TMP/ckpt/step-00000005/manifest.json" ] || { echo "FAIL: no committed checkpoint"; fail=1; }
run resume_np1 1 --steps 12 --ckpt "$TMP/ckpt" --resume
run resume_z2 2 --steps 12 --zero-stage 2 --ckpt "$TMP/ckpt" --resume
run resume_z3 2 --steps 12 --zero-stage 3 --ckpt "$TMP/ckpt" --resume
for name in resume_np1 resume_z2 resume_z3; do
  grep -q "resumed at step 5" "$TMP/$name.log" || { echo "FAIL: $name did not resume"; fail=1; }
  [ "$(losses "$TMP/$name.log" | head -1 | cut -d' ' -f1)" = 6 ] ||
    { echo "FAIL: $name did not continue at step 6"; cat "$TMP/$name.log"; fail=1; }
  same ref $name
done
# The program refuses bad options clearly (exit 2).
"$APP" --zero-stage 5 > "$TMP/bad.log" 2>&1
rc=$?
if [ $rc -ne 2 ] || ! grep -q "zero_stage 5 is not one of" "$TMP/bad.log"; then
  echo "FAIL: a bad zero_stage not refused with exit 2 (exit $rc):"; cat "$TMP/bad.log"; fail=1
fi

[ $fail -eq 0 ] && echo "ok: hfrun embeds from an install" || echo "FAILED"
exit $fail
