#!/usr/bin/env bash
# Builds hfrun with sanitizers (clang, no CUDA) and runs the test suite under them.
#   bash scripts/sanitize.sh asan [--ci] [CTEST_ARGS...]   ASan + UBSan (any UB report fails)
#   bash scripts/sanitize.sh tsan [--ci] [CTEST_ARGS...]   TSan, OpenMP at one thread
# With no CTEST_ARGS the whole CPU suite runs; `--ci` builds and runs only the subset labelled
# `sanitize` (what CI runs, a few minutes).
# Build dirs: build-asan/, build-tsan/ (SANITIZE_BUILD_DIR overrides; CI points asan at
# build-fuzz/, whose objects already carry ASan + UBSan). Suppressions, each with its reason, are
# in scripts/sanitizers/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-}"
shift || true
case "$MODE" in
  asan) FLAGS=address,undefined ;;
  tsan) FLAGS=thread ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan [CTEST_ARGS...]" >&2; exit 2 ;;
esac
command -v clang++ > /dev/null || { echo "sanitize.sh: needs clang++ (scripts/install-deps.sh)" >&2; exit 2; }
BUILD_DIR="${SANITIZE_BUILD_DIR:-build-$MODE}"
SUPP="$PWD/scripts/sanitizers"

CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHFRUN_SANITIZE="$FLAGS" -DHFRUN_CUDA=OFF -DHFRUN_BUILD_TESTS=ON > /dev/null
CI_SUBSET=0
if [ "${1:-}" = --ci ]; then
  CI_SUBSET=1
  # CI's subset: the gtest binaries labelled `sanitize` and the MPI process group on 2 ranks.
  shift
  set -- -L sanitize "$@"
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target common_tests tensor_tests autograd_tests \
    data_tests io_tests models_tests optim_tests train_tests distributed_tests mpi_comm_test
else
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
fi

# Open MPI's components stay loaded so that their frames have names in leak reports (the MPI
# tests also unwind fully at malloc: tests/CMakeLists.txt).
export OMPI_MCA_mca_base_component_disable_dlclose=1
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:strict_init_order=1"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp"
export TSAN_OPTIONS="suppressions=$SUPP/tsan.supp:halt_on_error=1:second_deadlock_stack=1:history_size=4"
if [ "$MODE" = tsan ]; then export OMP_NUM_THREADS=1; fi
# The whole suite starts hfrun's MPI ranks from many shell tests: unwind fully everywhere.
if [ "$CI_SUBSET" = 0 ]; then export ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0"; fi
cd "$BUILD_DIR"
# Not run under sanitizers: estimate_memory compares resident memory with the estimate (shadow
# memory is not the run's), embed_install builds a program with the system compiler against the
# instrumented libraries.
ctest --output-on-failure -j "${JOBS:-2}" --timeout 1800 -E '^(estimate_memory|embed_install)$' "$@"
