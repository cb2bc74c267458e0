// Grammar-constrained decoding: time of one step (allowed() + accept()) along a synthetic walk, the
// tokens of a JSON instance as the real tokenizer encodes them, under the grammar of its schema.
// Run: node --import tsx bench/grammar.ts [--quick]
//
// Rows: the vocabulary (sparrow-mini's 8192 byte-level BPE tokens, and the same grown to 49152 with
// concatenations of two of its tokens), the schema (strings unbounded, or with maxLength: every
// count is then an automaton state of its own), cold (a fresh grammar: every state and mask is new)
// or warm (a second walk, states and masks cached), and the steps inside JSON strings vs the others.
// The naive mask (every token fed to its own matcher clone) is timed on the same steps for scale.
import { readFileSync } from 'node:fs';
import { Grammar, GrammarConstraint, naiveAllowed, TokenVocabulary } from '../src/generate/grammar/index';
import { Tokenizer } from '../src/generate/tokenizer';
import { rng } from '../test/helpers';

const quick = process.argv.includes('--quick');
const dir = new URL('../models/sparrow-mini/', import.meta.url);
const tok = Tokenizer.fromJSON(readFileSync(new URL('tokenizer.json', dir), 'utf8'), JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')));
const eos = tok.tokenToId('<|endoftext|>')!;

const SCHEMA = {
  $defs: {
    item: {
      type: 'object',
      properties: { sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{4}$' }, qty: { type: 'integer' }, price: { type: 'number' }, note: { type: 'string' } },
      required: ['sku', 'qty', 'price'],
    },
  },
  type: 'object',
  properties: {
    id: { type: 'string', format: 'uuid' },
    customer: { type: 'object', properties: { name: { type: 'string' }, email: { type: 'string', format: 'email' }, vip: { type: 'boolean' } }, required: ['name', 'email'] },
    status: { enum: ['pending', 'paid', 'shipped', 'cancelled'] },
    items: { type: 'array', items: { $ref: '#/$defs/item' }, minItems: 1 },
    comment: { type: ['string', 'null'] },
  },
  required: ['id', 'customer', 'status', 'items', 'comment'],
};

/** The same schema with bounded strings. */
const BOUNDED = structuredClone(SCHEMA) as any;
BOUNDED.$defs.item.properties.note.maxLength = 120;
BOUNDED.properties.customer.properties.name.maxLength = 64;
BOUNDED.properties.comment.maxLength = 2000;

const lorem = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation — naïve café, 日本語, emoji 😀. ';
const INSTANCE = {
  id: '123e4567-e89b-12d3-a456-426614174000',
  customer: { name: 'Jane Q. Public', email: 'jane.public@example.com', vip: true },
  status: 'paid',
  items: [
    { sku: 'ABC-1234', qty: 2, price: 19.99, note: lorem.slice(0, 90) },
    { sku: 'XYZ-0042', qty: 1, price: 5 },
  ],
  comment: lorem.repeat(quick ? 1 : 3),
};

/** Real tokens, then concatenations of two real tokens, up to `size` ids (same ids for the real ones). */
function grownVocab(base: (Uint8Array | null)[], size: number): (Uint8Array | null)[] {
  const out = base.slice();
  const seen = new Set(base.map((b) => (b ? Buffer.from(b).toString('latin1') : '')));
  const real = base.filter((b): b is Uint8Array => !!b);
  const r = rng(1);
  while (out.length < size) {
    const a = real[Math.floor(r() * real.length)];
    const b = real[Math.floor(r() * real.length)];
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    const key = Buffer.from(joined).toString('latin1');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(joined);
  }
  return out;
}

interface Walk { inString: number[]; other: number[]; naive: number[] }

/** One constrained walk along `ids`: per-step times of allowed() + accept(), by where the step starts. */
function walk(grammar: Grammar, vocab: TokenVocabulary, ids: number[], naiveEvery: number): Walk {
  const c = new GrammarConstraint(grammar, vocab, [eos]);
  const w: Walk = { inString: [], other: [], naive: [] };
  let inString = false;
  let escaped = false;
  for (let k = 0; k < ids.length; k++) {
    const id = ids[k];
    if (naiveEvery && k % naiveEvery === 0) {
      const t = performance.now();
      naiveAllowed(c.matcher, vocab, [eos]);
      w.naive.push(performance.now() - t);
    }
    const t = performance.now();
    const mask = c.allowed();
    c.accept(id);
    (inString ? w.inString : w.other).push(performance.now() - t);
    if (!mask[id]) throw new Error(`token ${id} was not allowed`);
    for (const b of vocab.tokenBytes[id]!) {
      if (escaped) escaped = false;
      else if (inString && b === 0x5c) escaped = true;
      else if (b === 0x22) inString = !inString;
    }
  }
  const t = performance.now();
  if (!c.allowed()[eos]) throw new Error('the end token is not allowed at the end');
  c.accept(eos);
  w.other.push(performance.now() - t);
  if (!c.done) throw new Error('walk did not finish');
  return w;
}

function stats(xs: number[]): string[] {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  const mean = s.reduce((a, b) => a + b, 0) / Math.max(1, s.length);
  return [String(s.length), mean.toFixed(4), q(0.5).toFixed(4), q(0.9).toFixed(4), s[s.length - 1].toFixed(3)];
}

function table(header: string[], rows: string[][]): void {
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < 4 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ');
  console.log(line(header));
  console.log(width.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

let t = performance.now();
const baseBytes = tok.tokenBytes();
const tTokenBytes = performance.now() - t;
const text = JSON.stringify(INSTANCE, null, 0).replace(/,"/g, ', "').replace(/":/g, '": ');
const ids = tok.encode(text, { addSpecialTokens: false });
console.log(`instance: ${text.length} chars, ${ids.length} tokens; tokenBytes() ${tTokenBytes.toFixed(1)} ms`);

const rows: string[][] = [];
for (const size of [baseBytes.length, 49152]) {
  t = performance.now();
  const vocab = new TokenVocabulary(size === baseBytes.length ? baseBytes : grownVocab(baseBytes, size));
  const tTrie = performance.now() - t;
  console.log(`vocab ${size}: trie of ${vocab.nodeCount} nodes built in ${tTrie.toFixed(1)} ms`);
  // A first walk on another grammar warms the JIT, so "cold" below measures new states, not compilation.
  walk(Grammar.jsonObject(), vocab, tok.encode('{"warm": [1, "up"]}', { addSpecialTokens: false }), 0);
  for (const [label, schema] of [['open', SCHEMA], ['maxLength', BOUNDED]] as const) {
    t = performance.now();
    const grammar = Grammar.fromJsonSchema(schema);
    console.log(`  ${label} schema compiled in ${(performance.now() - t).toFixed(1)} ms`);
    const cold = walk(grammar, vocab, ids, quick || label !== 'open' ? 0 : 16);
    const warm = walk(grammar, vocab, ids, 0);
    const row = (caches: string, steps: string, xs: number[]) => rows.push([String(size), label, caches, steps, ...stats(xs)]);
    row('cold', 'in string', cold.inString);
    row('cold', 'other', cold.other);
    row('cold', 'all', [...cold.inString, ...cold.other]);
    row('warm', 'in string', warm.inString);
    row('warm', 'other', warm.other);
    if (cold.naive.length) row('naive', 'sampled', cold.naive);
  }
}
console.log('\nms per step (allowed() + accept()):');
table(['vocab', 'schema', 'caches', 'steps', 'n', 'mean', 'p50', 'p90', 'max'], rows);
