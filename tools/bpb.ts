// Validation bits per byte of a model on a text corpus, computed exactly as
// tools/train/mini.py eval_bpb does in transformers: documents split on "\n<|endoftext|>\n",
// each encoded without special tokens and followed by <|endoftext|>; the token stream cut into
// non-overlapping 512-token windows; every token but the first of a window is predicted; bytes
// are the UTF-8 bytes of the predicted tokens (special tokens count 0).
//
//   npm run bpb -- [--model models/sparrow-mini] [--text tools/corpus/valid.txt.gz] [--windows N]
//
// The default text is the corpus' validation split, tools/corpus/valid.txt.gz (see its README); a
// --text path ending in .gz is decompressed. Relative defaults are resolved from the repository root.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { loadModel } from '../src/index';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const opt = (name: string, d: string) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return d;
  if (i + 1 >= args.length) fail(`--${name} needs a value`);
  return args[i + 1];
};
function fail(msg: string): never {
  console.error(`bpb: ${msg}`);
  process.exit(1);
}
const modelDir = opt('model', `${ROOT}models/sparrow-mini`);
const DEFAULT_TEXT = `${ROOT}tools/corpus/valid.txt.gz`;
const textPath = opt('text', DEFAULT_TEXT);
const maxWindows = Number(opt('windows', 'Infinity'));
if (!(maxWindows >= 1)) fail(`--windows needs a number ≥ 1, got ${JSON.stringify(opt('windows', ''))}`);
if (!existsSync(textPath)) {
  fail(textPath === DEFAULT_TEXT
    ? `${textPath} not found: the validation text ships in this repository (restore it with: git checkout -- tools/corpus/valid.txt.gz)`
    : `${textPath} not found (--text takes a UTF-8 text file, or a .gz of one)`);
}
const SEQ = 512;
const EOT = '<|endoftext|>';

const lm = await loadModel(modelDir, { exact: true, maxContext: SEQ });
const tok = lm.tokenizer!;
const eot = tok.tokenToId(EOT)!;
const raw = await readFile(textPath);
const text = new TextDecoder('utf-8', { fatal: true }).decode(/\.gz$/i.test(textPath) ? gunzipSync(raw) : raw);
const ids: number[] = [];
for (let d of text.split(`\n${EOT}\n`)) {
  d = d.replace(/^\n+|\n+$/g, '');
  if (!d || d === EOT) continue;
  for (const t of tok.encode(d, { addSpecialTokens: false })) ids.push(t);
  ids.push(eot);
}
const byteLen = new Map<number, number>();
const bytesOf = (id: number) => {
  let n = byteLen.get(id);
  if (n === undefined) {
    // Byte-level BPE spells each byte as one character of its alphabet, so a token's byte count is
    // its character count (decoding a lone token could split a UTF-8 sequence).
    const s = tok.idToToken(id) ?? '';
    n = tok.isSpecial(id) ? 0 : [...s].length;
    byteLen.set(id, n);
  }
  return n;
};
const nWin = Math.min(Math.floor(ids.length / SEQ), maxWindows);
let nats = 0, bytes = 0, tokens = 0;
const t0 = Date.now();
for (let w = 0; w < nWin; w++) {
  const win = ids.slice(w * SEQ, (w + 1) * SEQ);
  const s = lm.model.newSession();
  const logits = s.forward(win, true);
  s.dispose();
  const V = lm.model.net.vocabSize;
  for (let t = 0; t + 1 < SEQ; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (row[i] > m) m = row[i];
    let z = 0;
    for (let i = 0; i < V; i++) z += Math.exp(row[i] - m);
    nats -= row[win[t + 1]] - m - Math.log(z);
    bytes += bytesOf(win[t + 1]);
    tokens++;
  }
  if (process.stderr.isTTY) process.stderr.write(`\r${w + 1}/${nWin} windows`);
}
const res = { model: modelDir, text: textPath, tokens_total: ids.length, windows: nWin, tokens, bytes, nats, loss: nats / tokens, bpb: nats / Math.LN2 / bytes, seconds: (Date.now() - t0) / 1000 };
console.log(JSON.stringify(res));
await lm.dispose();
