#!/usr/bin/env bash
# Sentence-pair classification end to end (MRPC's shape, Accelerate's nlp_example): fetches the
# Brown corpus excerpt (scripts/example-data.sh), makes 12000 + 400 sentence pairs and a
# WordPiece tokenizer from it (examples/make_pairs.js), and fine-tunes a small BERT from scratch
# (examples/bert_pairs.yaml, under a minute on 2 cores), printing val_accuracy and val_f1.
# Run after scripts/quickstart.sh (or any build of hfrun in BUILD_DIR); extra arguments go to
# hfrun (e.g. -np 2, --set train.max_steps=300).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
BUILD_DIR="$BUILD_DIR" bash scripts/example-data.sh
node examples/make_pairs.js "$BUILD_DIR/tests/tokenizer_reference/brown_1mb.txt" \
  "$BUILD_DIR/examples/bert_pairs"
"$BUILD_DIR/hfrun" "$@" examples/bert_pairs.yaml \
  --set "tokenizer=$BUILD_DIR/examples/bert_pairs/tokenizer.json" \
  --set "data.train=[$BUILD_DIR/examples/bert_pairs/train.jsonl]" \
  --set "data.val=[$BUILD_DIR/examples/bert_pairs/val.jsonl]"
