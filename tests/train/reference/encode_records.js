// Encodes the records of OUT_DIR/{train,val}.jsonl with Hugging Face's tokenizers (the npm
// binding: Rust inside) and writes OUT_DIR/encoded.json for the PyTorch references; copies the
// tokenizer to OUT_DIR/tokenizer.json for hfrun.
//   pairs: sentence1 / sentence2 with special tokens, longest_first truncation to SEQ_LEN (as
//          hfrun's sequence_classification encodes them)
//   sft:   the prompt with special tokens, the completion without, and the eos id (</s>)
//   node encode_records.js OUT_DIR TOKENIZER_JSON SEQ_LEN [pairs|sft]   (NODE_PATH: node_modules)
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const [outDir, tokenizerPath, seqLen, mode = 'pairs'] = process.argv.slice(2);
(async () => {
  const tok = Tokenizer.fromFile(tokenizerPath);
  if (mode === 'pairs') tok.setTruncation(Number(seqLen));
  const out = { vocab_size: tok.getVocabSize(true) };
  for (const split of ['train', 'val']) {
    const lines = fs.readFileSync(path.join(outDir, `${split}.jsonl`), 'utf8').split('\n').filter((l) => l.trim());
    out[split] = [];
    for (const line of lines) {
      const r = JSON.parse(line);
      if (mode === 'sft') {
        const p = await tok.encode(r.prompt, null, { addSpecialTokens: true });
        const c = await tok.encode(r.completion, null, { addSpecialTokens: false });
        out[split].push({ prompt_ids: Array.from(p.getIds()), completion_ids: Array.from(c.getIds()),
          eos: tok.tokenToId('</s>') });
        continue;
      }
      const enc = await tok.encode(r.sentence1, r.sentence2, { addSpecialTokens: true });
      out[split].push({ ids: Array.from(enc.getIds()), type_ids: Array.from(enc.getTypeIds()), label: r.label });
    }
  }
  fs.writeFileSync(path.join(outDir, 'encoded.json'), JSON.stringify(out));
  fs.copyFileSync(tokenizerPath, path.join(outDir, 'tokenizer.json'));
})().catch((e) => { console.error(e); process.exit(1); });
