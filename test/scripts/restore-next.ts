// Restores a session snapshot into a fresh model and prints the next token's logits (base64 of
// the float32 bytes): run under Node, Bun and Deno by test/snapshot-runtimes.test.ts.
//   <runtime> test/scripts/restore-next.ts MODEL_DIR SNAPSHOT_FILE NEXT_TOKEN
import { readFile } from 'node:fs/promises';
import { loadModel } from '../../src/index';

const [modelDir, snapFile, next] = process.argv.slice(2);
const lm = await loadModel(modelDir, { build: 'simd' });
const s = lm.restore(new Uint8Array(await readFile(snapFile)));
const pos = s.pos;
const logits = s.inner.forward([Number(next)]) as Float32Array;
const bytes = new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength);
let bin = '';
for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
console.log(JSON.stringify({ pos, logits: btoa(bin) }));
await lm.dispose();
