// Tokenizers from the hand-made fixtures (test/fixtures/tokenizers/): round trips on varied Unicode,
// special and added tokens, and incremental decoding that never splits a character.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../src/generate/tokenizer';
import { TextStream } from '../src/generate/stream';
import { ChatTemplate, selectTemplate } from '../src/generate/chat-template';
import { FormatError } from '../src/formats/errors';
import { RequestError } from '../src/generate/errors';
import { TOKENIZERS } from './tiny-models';

function load(name: string): Tokenizer {
  const json = readFileSync(join(TOKENIZERS, name, 'tokenizer.json'), 'utf8');
  const cfg = JSON.parse(readFileSync(join(TOKENIZERS, name, 'tokenizer_config.json'), 'utf8'));
  return Tokenizer.fromJSON(json, cfg);
}

const TEXTS: Record<string, string> = {
  ascii: 'Once upon a time, the fox said: "Hello!" — and ran.',
  zwjEmoji: 'family 👨‍👩‍👧‍👦, flag 🏳️‍🌈, skin 👋🏽, keycap 1️⃣',
  cjk: '日本語の文字列と中文字符串，한국어 텍스트。',
  combining: 'cafe\u0301 nai\u0308ve n\u0303 a\u030a\u0301',
  rtl: 'שלום עולם, مرحبا بالعالم! (mixed) עברית123',
  whitespace: '  two leading, tabs\tand\nnew\r\nlines\n\n  trailing  ',
  astral: '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝄞 𐍈 \u{10FFFD}',
  specialsLookalike: 'not <|im_end special |im_end|> text',
};

describe.each(['byte-bpe', 'spm-bpe'])('%s round trips', (name) => {
  const tok = load(name);
  // The byte-level fixture normalizes to NFC (its tokenizer.json says so); byte fallback keeps all.
  const expected = (s: string) => (name === 'byte-bpe' ? s.normalize('NFC') : s);
  for (const [label, text] of Object.entries(TEXTS)) {
    it(label, () => {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(ids.length).toBeGreaterThan(0);
      for (const id of ids) expect(id).toBeLessThan(tok.vocabSize);
      expect(tok.decode(ids)).toBe(expected(text));
    });
  }

  it('decodes token by token without splitting characters', () => {
    for (const text of Object.values(TEXTS)) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      const stream = new TextStream(tok, []);
      let out = '';
      for (const id of ids) {
        const d = stream.push(id);
        expect(d.includes('\uFFFD')).toBe(false);
        // Every delta is whole code points: no lone surrogate at either end.
        if (d) expect(/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/.test(d)).toBe(false);
        out += d;
      }
      out += stream.flush();
      expect(out).toBe(expected(text));
    }
  });

  it('streamed continuation after a prompt keeps its leading space', () => {
    const prompt = tok.encode('Once upon', { addSpecialTokens: true });
    const cont = tok.encode(' a time 🦊 there', { addSpecialTokens: false });
    const whole = tok.decode([...prompt, ...cont], { skipSpecialTokens: true });
    const stream = new TextStream(tok, prompt);
    const got = cont.map((id) => stream.push(id)).join('') + stream.flush();
    expect(tok.decode(prompt, { skipSpecialTokens: true }) + got).toBe(whole);
  });
});

describe('special and added tokens', () => {
  it('byte-bpe: ChatML markers are single special tokens', () => {
    const tok = load('byte-bpe');
    const start = tok.tokenToId('<|im_start|>')!, end = tok.tokenToId('<|im_end|>')!;
    expect(start).toBeGreaterThan(0);
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|>', { addSpecialTokens: false });
    expect(ids[0]).toBe(start);
    expect(ids[ids.length - 1]).toBe(end);
    expect(tok.eosId).toBe(end);
    expect(tok.isSpecial(start) && tok.isSpecial(end)).toBe(true);
    expect(tok.decode(ids)).toBe('<|im_start|>user\nhi<|im_end|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('user\nhi');
    // A byte-level BPE learns merges: " the" is one token.
    expect(tok.encode(' the', { addSpecialTokens: false })).toEqual([tok.tokenToId('Ġthe')]);
  });

  it('spm-bpe: BOS from the post-processor, byte fallback for unseen characters', () => {
    const tok = load('spm-bpe');
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    expect(tok.encode('hello')[0]).toBe(1);
    expect(tok.encode('hello', { addSpecialTokens: false })[0]).not.toBe(1);
    const ids = tok.encode('☃', { addSpecialTokens: false });
    expect(ids.map((i) => tok.idToToken(i))).toEqual(['▁', '<0xE2>', '<0x98>', '<0x83>']);
    expect(tok.decode([1, ...ids, 2], { skipSpecialTokens: true })).toBe('☃');
  });

  it('unigram: round trips text its vocabulary covers; unknown characters become <unk>', () => {
    const tok = load('unigram');
    for (const text of ['the fox ran to the river', '日本語の文字列', 'مرحبا بالعالم', 'שלום עולם', 'éèêëçñøåäöüß Ωλ☃★']) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(tok.decode(ids)).toBe(text);
    }
    const withEos = tok.encode('the fox');
    expect(withEos[withEos.length - 1]).toBe(2);
    const ids = tok.encode('🦊', { addSpecialTokens: false });
    expect(ids).toContain(0);
  });

  it('malformed tokenizer.json is a FormatError naming the file', () => {
    expect(() => Tokenizer.fromJSON('{not json')).toThrow(FormatError);
    expect(() => Tokenizer.fromJSON('{"version":"1.0"}')).toThrow(/tokenizer\.json/);
  });
});

describe('chat templates', () => {
  const cfgOf = (name: string) => JSON.parse(readFileSync(join(TOKENIZERS, name, 'tokenizer_config.json'), 'utf8'));

  it('ChatML with add_generation_prompt', () => {
    const t = ChatTemplate.fromConfig(cfgOf('byte-bpe'))!;
    expect(t.render([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi 👋' }])).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 👋<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(t.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: false })).toBe('<|im_start|>user\nHi<|im_end|>\n');
  });

  it('Llama-2 style with bos/eos tokens and raise_exception', () => {
    const t = ChatTemplate.fromConfig(cfgOf('spm-bpe'))!;
    expect(t.render([{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }])).toBe(
      '<s>[INST] a [/INST] b</s>[INST] c [/INST]',
    );
    expect(() => t.render([{ role: 'assistant', content: 'x' }])).toThrow(RequestError);
    expect(() => t.render([{ role: 'assistant', content: 'x' }])).toThrow(/alternate/);
  });

  it('named template lists pick "default" or the one asked for', () => {
    const list = [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }];
    expect(selectTemplate(list)).toBe('D');
    expect(selectTemplate(list, 'tool_use')).toBe('T');
    expect(() => selectTemplate(list, 'nope')).toThrow(RequestError);
    expect(ChatTemplate.fromConfig({})).toBeNull();
  });
});
