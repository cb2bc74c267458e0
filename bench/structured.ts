// Decode speed with and without a grammar constraint, end to end through generate() (the mask of
// allowed tokens computed and applied before each sampling step), on the embedded model.
// Run: npm run bench:structured [-- --rounds N --tokens N]
//
// Rows: no constraint; a JSON schema whose one string is unbounded (the reply can run as long as the
// unconstrained one); `json_object` (any JSON object); a schema of nested objects, enums, arrays and
// bounded strings (every count of a bounded string is a grammar state of its own, so masks are
// computed more often). Rounds interleave the rows; each figure is the median over rounds of the
// decode tokens per second (first token to last). Each constrained row reuses one Grammar object
// across rounds, as a server does for a schema sent again, so its masks are cached after round one;
// the first round's figure is reported apart.
import { join } from 'node:path';
import { Grammar, loadModel, type GenerateParams } from '../src/index';
import { PET_SCHEMA } from '../test/structured-helpers';

const args = process.argv.slice(2);
const opt = (name: string, d: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : d;
};
const rounds = opt('--rounds', 5);
const maxTokens = opt('--tokens', 256);

const lm = await loadModel(join(import.meta.dirname, '../models/sparrow-mini'), { build: 'auto', maxContext: 1024 });
const prompt = 'Once upon a time, in a small village by the sea,';
const rows: [string, GenerateParams | null][] = [
  ['no constraint', null],
  ['JSON schema, one unbounded string', { grammar: Grammar.fromJsonSchema({ type: 'object', properties: { story: { type: 'string' } }, required: ['story'] }) }],
  ['json_object (any JSON object)', { grammar: Grammar.jsonObject() }],
  ['JSON schema, nested, enums, bounded strings', { grammar: Grammar.fromJsonSchema(PET_SCHEMA) }],
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const tps: number[][] = rows.map(() => []);
const first: number[] = rows.map(() => 0);
const lengths: number[][] = rows.map(() => []);
for (let r = 0; r < rounds; r++) {
  for (const [i, [, p]] of rows.entries()) {
    const g = await lm.generate(prompt, { temperature: 0.8, seed: 100 + r, maxTokens, ignoreEos: p === null, ...(p ?? {}) }).result();
    const n = g.stats.generatedTokens - 1;
    const v = n > 0 ? n / (g.stats.decodeMs / 1000) : 0;
    if (r === 0) first[i] = v;
    else tps[i].push(v);
    lengths[i].push(g.stats.generatedTokens);
  }
}
const base = median(tps[0]);
console.log(`model: sparrow-mini (vocabulary ${lm.vocabSize}), build ${lm.model.k.build}, 1 thread; prompt ${lm.encode(prompt).length} tokens; temperature 0.8; ${rounds} rounds (round 1 apart: cold masks), medians of the rest`);
console.log('| decode | tokens per reply (median) | tok/s, round 1 | tok/s (median) | ÷ no constraint |\n|---|---:|---:|---:|---:|');
for (const [i, [name]] of rows.entries()) {
  const m = median(tps[i]);
  console.log(`| ${name} | ${median(lengths[i])} | ${first[i].toFixed(1)} | ${m.toFixed(1)} | ${(m / base).toFixed(2)} |`);
}
await lm.dispose();
