// The embedded default model: its greedy continuation of a fixed prompt must be the text
// transformers produces from the same files (models/sparrow-mini/expected_greedy.json, made by
// tools/parity/gguf_reference.py), and `info` must describe the shipped hybrid.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';

const dir = 'models/sparrow-mini';
const expected = JSON.parse(readFileSync(`${dir}/expected_greedy.json`, 'utf8'));

describe('sparrow-mini (embedded default model)', () => {
  it('greedy continuation equals transformers on the same files', async () => {
    const lm = await loadModel(dir, { exact: true });
    expect(lm.encode(expected.prompt, false)).toEqual(expected.prompt_ids);
    const s = lm.model.newSession();
    let logits = s.forward(expected.prompt_ids);
    const out: number[] = [];
    const eos = [...lm.eosTokenIds];
    for (let i = 0; i < expected.tokens.length; i++) {
      let best = -1;
      for (let v = 0; v < logits.length; v++) if (!eos.includes(v) && (best < 0 || logits[v] > logits[best])) best = v;
      out.push(best);
      logits = s.forward([best]);
    }
    expect(out).toEqual(expected.tokens);
    expect(lm.decode(out)).toBe(expected.text);
    await lm.dispose();
  }, 60_000);

  it('is the Qwen3-Next hybrid the model card describes, held in Q8_0', async () => {
    const lm = await loadModel(dir);
    const info = lm.info() as any;
    expect(info.modelType).toBe('qwen3_next');
    expect(info.layers.filter((l: string) => l.includes('attention') && !l.includes('linear')).length).toBe(2);
    expect(info.bytesByDType.q8_0).toBeGreaterThan(10_000_000);
    await lm.dispose();
  });
});
