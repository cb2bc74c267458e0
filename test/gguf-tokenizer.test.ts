// Tokenizers through GGUF metadata as llama.cpp stores them: each fixture tokenizer written as
// tokenizer.ggml.* keys, read back from the GGUF file, gives the HF tokenizer's ids and text.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GGUFWriter, parseGGUF } from '../src/formats/gguf';
import { tokenizerFromGGUF, tokenizerToGGUF } from '../src/formats/gguf-tokenizer';
import { bufferSource } from '../src/formats/source';
import { Tokenizer } from '../src/generate/tokenizer';

const DIR = fileURLToPath(new URL('./fixtures/tokenizers/', import.meta.url));

const TEXTS = [
  'Once upon a time there was a little fox.',
  'The fox liked to run and play with the other animals.',
  '  leading and  double  spaces, trailing ',
  'tabs\tand\nnew\n\nlines',
  'digits 0 12 345 6789 3.14159 and 2024-06-01',
  'unicode: café, naïve, Straße, 東京, Привет, 😀🦊',
  "punctuation! \"quotes\" (parens) [brackets] it's we'll",
  '',
  ' ',
  'a',
];

function roundTrip(name: string) {
  const tj = readFileSync(join(DIR, name, 'tokenizer.json'), 'utf8');
  const tc = JSON.parse(readFileSync(join(DIR, name, 'tokenizer_config.json'), 'utf8'));
  const hf = Tokenizer.fromJSON(tj, tc);
  const w = new GGUFWriter();
  w.set('general.architecture', 'llama', 'string');
  for (const [k, v, type] of tokenizerToGGUF(tj, tc)) w.set(k, v, type);
  return { hf, w, tc };
}

async function reread(w: GGUFWriter) {
  const g = await parseGGUF(bufferSource(w.toUint8Array()));
  const back = tokenizerFromGGUF(g.metadata);
  if (!back) throw new Error('no tokenizer');
  return { g, tok: Tokenizer.fromJSON(back.tokenizerJson, back.tokenizerConfig) };
}

describe.each([
  ['byte-bpe', 'gpt2'],
  ['spm-bpe', 'llama'],
  ['unigram', 't5'],
])('%s', (name, model) => {
  it(`is written as tokenizer.ggml.model ${model} and reads back to the same ids`, async () => {
    const { hf, w } = roundTrip(name);
    const { g, tok } = await reread(w);
    expect(g.metadata['tokenizer.ggml.model']).toBe(model);
    expect(tok.vocabSize).toBe(hf.vocabSize);
    expect(tok.bosId).toBe(hf.bosId);
    expect(tok.eosId).toBe(hf.eosId);
    expect([...tok.specialIds].sort()).toEqual([...hf.specialIds].sort());
    for (const text of TEXTS) {
      for (const addSpecialTokens of [true, false]) {
        expect(tok.encode(text, { addSpecialTokens }), `${JSON.stringify(text)} special=${addSpecialTokens}`).toEqual(hf.encode(text, { addSpecialTokens }));
      }
      const ids = hf.encode(text, { addSpecialTokens: false });
      expect(tok.decode(ids)).toBe(hf.decode(ids));
      for (const skipSpecialTokens of [true, false]) {
        const withSpecial = hf.encode(text);
        expect(tok.decode(withSpecial, { skipSpecialTokens })).toBe(hf.decode(withSpecial, { skipSpecialTokens }));
      }
    }
    // Special tokens written in the text.
    for (const s of hf.specialTokens) {
      const text = `before ${s} after${s}`;
      expect(tok.encode(text)).toEqual(hf.encode(text));
    }
  });
});

describe('tokenizer metadata keys', () => {
  it('byte-level BPE: merges, token types and special ids as llama.cpp writes them', async () => {
    const { w } = roundTrip('byte-bpe');
    const { g } = await reread(w);
    const m = g.metadata;
    expect(m['tokenizer.ggml.pre']).toBe('gpt-2');
    expect((m['tokenizer.ggml.merges'] as string[])[0]).toMatch(/^\S+ \S+$/);
    const types = m['tokenizer.ggml.token_type'] as number[];
    const tokens = m['tokenizer.ggml.tokens'] as string[];
    expect(types[tokens.indexOf('<|im_end|>')]).toBe(3);
    expect(m['tokenizer.ggml.eos_token_id']).toBe(tokens.indexOf('<|im_end|>'));
    expect(m['tokenizer.ggml.bos_token_id']).toBeUndefined();
    expect(m['tokenizer.ggml.add_bos_token']).toBe(false);
  });

  it('SentencePiece BPE: scores, byte tokens and add_bos_token', async () => {
    const { w } = roundTrip('spm-bpe');
    const { g } = await reread(w);
    const m = g.metadata;
    const tokens = m['tokenizer.ggml.tokens'] as string[];
    const types = m['tokenizer.ggml.token_type'] as number[];
    expect(types[tokens.indexOf('<0x41>')]).toBe(6);
    expect(types[tokens.indexOf('<unk>')]).toBe(2);
    expect(types[tokens.indexOf('<s>')]).toBe(3);
    expect((m['tokenizer.ggml.scores'] as number[]).length).toBe(tokens.length);
    expect(m['tokenizer.ggml.add_bos_token']).toBe(true);
    expect(m['tokenizer.ggml.bos_token_id']).toBe(tokens.indexOf('<s>'));
  });

  it('malformed entries are named', () => {
    expect(() => tokenizerFromGGUF({ 'tokenizer.ggml.model': 'gpt2' })).toThrow(/tokenizer\.ggml\.tokens.*required/);
    expect(() => tokenizerFromGGUF({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a', 'b'] })).toThrow(/tokenizer\.ggml\.merges.*required/);
    expect(() => tokenizerFromGGUF({ 'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.scores': [0, 1] })).toThrow(/tokenizer\.ggml\.scores.*1 entries/);
    expect(() => tokenizerFromGGUF({ 'tokenizer.ggml.model': 'rwkv', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/"rwkv" is not supported/);
    expect(() => tokenizerFromGGUF({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.merges': [], 'tokenizer.ggml.eos_token_id': 5 })).toThrow(/eos_token_id.*not a token id/);
    expect(tokenizerFromGGUF({})).toBeUndefined();
  });
});
