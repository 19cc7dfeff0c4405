// Makes the fine-tuning examples' data from the Brown corpus excerpt (scripts/example-data.sh
// fetches it):
//   {train,val}.jsonl      sentence pairs, MRPC's shape: a sentence and a second one that says
//                          the same (a paraphrase: a word dropped, two neighbours swapped, label
//                          "equivalent") or something else (a sentence from elsewhere with a few
//                          of its words, label "not_equivalent")
//   tokenizer.json         a BERT-style uncased WordPiece tokenizer whose vocabulary is the
//                          corpus's commonest words, their endings and every character
//   sft_{train,val}.jsonl  prompt/completion records: "Complete the sentence: <its first half>"
//                          and the second half
//
//   node examples/make_pairs.js BROWN_TXT OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');

const [brown, outDir] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const text = fs.readFileSync(brown, 'utf8');
const sentences = text.split(/(?<=[.!?])\s+/).map((s) => s.trim())
  .filter((s) => { const n = s.split(/\s+/).length; return n >= 8 && n <= 30; });

// A seeded generator, so the data is the same on every machine.
let state = 12345;
function rand() {
  state = (state * 1103515245 + 12345) % 2147483648;
  return state / 2147483648;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

function paraphrase(s) {
  const w = s.split(/\s+/);
  w.splice(1 + Math.floor(rand() * (w.length - 2)), 1);
  const i = Math.floor(rand() * (w.length - 1));
  [w[i], w[i + 1]] = [w[i + 1], w[i]];
  return w.join(' ');
}
function unrelated(s) {
  const other = pick(sentences).split(/\s+/);
  const mine = s.split(/\s+/);
  for (let k = 0; k < 2; k++) other[Math.floor(rand() * other.length)] = pick(mine);
  return other.join(' ');
}

function records(from, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const s = sentences[(from + i * 7) % sentences.length];
    const same = rand() < 0.5;
    out.push(JSON.stringify({ sentence1: s, sentence2: same ? paraphrase(s) : unrelated(s),
      label: same ? 'equivalent' : 'not_equivalent' }));
  }
  return out.join('\n') + '\n';
}
fs.writeFileSync(path.join(outDir, 'train.jsonl'), records(0, 12000));
fs.writeFileSync(path.join(outDir, 'val.jsonl'), records(40000, 400));

function sft(from, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const w = sentences[(from + i * 5) % sentences.length].split(/\s+/);
    const half = Math.floor(w.length / 2);
    out.push(JSON.stringify({ prompt: 'Complete the sentence: ' + w.slice(0, half).join(' '),
      completion: ' ' + w.slice(half).join(' ') }));
  }
  return out.join('\n') + '\n';
}
fs.writeFileSync(path.join(outDir, 'sft_train.jsonl'), sft(3, 6000));
fs.writeFileSync(path.join(outDir, 'sft_val.jsonl'), sft(50000, 200));

// WordPiece vocabulary: specials, characters (and their ## forms), the 6000 commonest words,
// the 800 commonest word endings.
const counts = new Map();
const endings = new Map();
for (const w of text.toLowerCase().match(/[a-z]+|[0-9]+|[^\sa-z0-9]/g)) {
  counts.set(w, (counts.get(w) || 0) + 1);
  for (let n = 2; n <= 4 && n < w.length; n++) endings.set(w.slice(-n), (endings.get(w.slice(-n)) || 0) + 1);
}
const byCount = (m) => [...m.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
const pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
const seen = new Set(pieces);
const add = (p) => { if (!seen.has(p)) { seen.add(p); pieces.push(p); } };
for (const c of [...new Set(text.toLowerCase().replace(/\s/g, ''))].sort()) { add(c); add('##' + c); }
byCount(counts).slice(0, 6000).forEach(add);
byCount(endings).slice(0, 800).forEach((e) => add('##' + e));
const vocab = {};
pieces.forEach((p, i) => { vocab[p] = i; });
const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
  normalized: false, special: true });
const tokenizer = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map((t) => special(vocab[t], t)),
  normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
  pre_tokenizer: { type: 'BertPreTokenizer' },
  post_processor: { type: 'BertProcessing', sep: ['[SEP]', vocab['[SEP]']], cls: ['[CLS]', vocab['[CLS]']] },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
};
fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(tokenizer));
console.log(`wrote 12000 + 400 sentence pairs, 6000 + 200 prompt/completion records and a ` +
  `${pieces.length}-piece WordPiece tokenizer to ${outDir}`);
