#!/usr/bin/env bash
# Sets up (Debian packages), builds and runs the whole test suite. The README's second command
# and CI's .ci/run both run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHFRUN_WERROR=ON
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
(cd "$BUILD_DIR" && ctest --output-on-failure -j "${JOBS:-2}" --timeout 600)
# Every parser of untrusted input under libFuzzer with ASan + UBSan, briefly (FUZZ_SECONDS each;
# 0 skips); scripts/fuzz.sh TARGET SECONDS runs one for longer.
if [ "${FUZZ_SECONDS:-20}" -gt 0 ]; then
  bash scripts/fuzz.sh all "${FUZZ_SECONDS:-20}"
fi
# The gtest suites and the 2-rank MPI test under ASan + UBSan, on the fuzz build's objects
# (SANITIZE=0 skips); scripts/sanitize.sh asan|tsan runs the whole suite under either.
if [ "${SANITIZE:-1}" = 1 ]; then
  SANITIZE_BUILD_DIR=build-fuzz bash scripts/sanitize.sh asan --ci
fi
