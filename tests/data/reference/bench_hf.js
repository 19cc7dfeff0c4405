// Hugging Face tokenizers' encode throughput on a text file, line by line, measured the way
// `hfrun bench tokenizer` measures hfrun: one JSON line with MB/s and tokens/s.
//
//   [RAYON_NUM_THREADS=N] node bench_hf.js TOKENIZER.json TEXT [REPEATS]
// encodeBatch runs on HF's thread pool (RAYON_NUM_THREADS threads); with 1 it is single-threaded.
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

(async () => {
  const [tokPath, textPath, repeatsArg] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const text = fs.readFileSync(textPath, 'utf8');
  const lines = text.split('\n');
  const bytes = Buffer.byteLength(text);
  let best = Infinity;
  let tokens = 0;
  for (let rep = 0; rep < Number(repeatsArg || 3); rep++) {
    const t0 = process.hrtime.bigint();
    const encs = await tok.encodeBatch(lines, { addSpecialTokens: false });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, s);
    tokens = encs.reduce((n, e) => n + e.getIds().length, 0);
  }
  const threads = Number(process.env.RAYON_NUM_THREADS || require('os').cpus().length);
  console.log(JSON.stringify({ bench: 'tokenizer', impl: 'hf-tokenizers', threads, bytes, tokens,
    mb_per_s: +(bytes / best / 1e6).toFixed(2), tokens_per_s: Math.round(tokens / best) }));
})().catch((e) => { console.error(e); process.exit(1); });
