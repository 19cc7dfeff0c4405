#!/usr/bin/env bash
# Sets up (Debian packages), builds hfrun and runs the main job: a small training run of a
# tiny transformer language model on text the repo ships, then the matmul benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target hfrun_cli train_tiny_lm
"$BUILD_DIR/examples/train_tiny_lm" examples/data/tiny.txt
"$BUILD_DIR/hfrun" bench matmul --m 1024 --n 1024 --k 1024 --dtype f32 --baseline
