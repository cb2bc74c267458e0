// Grammar-constrained decoding: the GBNF parser and its errors, the byte-level matcher (partial
// UTF-8, ambiguity, repetition), regexes against JavaScript's RegExp, JSON Schema grammars on valid
// and invalid instances, token masks (trie walk against the naive reference on random grammars and
// vocabularies, random walks over the real tokenizer validated by JSON.parse), and token bytes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../src/generate/tokenizer';
import {
  Grammar, GrammarConstraint, GrammarError, GrammarMatcher, jsonSchemaToGbnf, naiveAllowed, regexToGbnf, TokenVocabulary,
} from '../src/generate/grammar/index';
import { rng } from './helpers';
import { TOKENIZERS } from './tiny-models';

const enc = new TextEncoder();

function accepts(g: Grammar, text: string): boolean {
  const m = new GrammarMatcher(g);
  return m.acceptString(text) && m.canEnd;
}

/** Feeds `text` one byte at a time; true if every byte is taken and the grammar can end there. */
function acceptsByteByByte(g: Grammar, text: string): boolean {
  const m = new GrammarMatcher(g);
  for (const b of enc.encode(text)) if (!m.acceptByte(b)) return false;
  return m.canEnd;
}

function gbnfError(text: string): GrammarError {
  try {
    Grammar.fromGbnf(text);
  } catch (e) {
    expect(e).toBeInstanceOf(GrammarError);
    return e as GrammarError;
  }
  throw new Error(`grammar was accepted: ${text}`);
}

function sparrowMini(): Tokenizer {
  const dir = join(__dirname, '..', 'models', 'sparrow-mini');
  return Tokenizer.fromJSON(readFileSync(join(dir, 'tokenizer.json'), 'utf8'), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
}

describe('GBNF parser', () => {
  it('parses literals, escapes, classes, groups, repetition and comments', () => {
    const g = Grammar.fromGbnf(String.raw`
      # a comment line
      root ::= greeting ws name ("!" | "?")?   # trailing comment
      greeting ::= "hi" | "h\x65llo" | "\u00e9t\u00E9"
      ws ::= [ \t]{1,2}
      name ::= [A-Z] [a-z0-9_\-]* tail
      tail ::= "\"q\"" | "\\" | "" | [^\n\]]{3}
    `);
    for (const ok of ['hi Bob', 'hello  Al_9-x!', 'été Z?', 'hi Q"q"', 'hi Q\\', 'hi Qabc', 'hi Qé😀ü']) expect(accepts(g, ok), ok).toBe(true);
    for (const bad of ['hi bob', 'hi   Bob', 'hiBob', 'hi Q"q', 'hi Q\nab', 'hi Q]]]']) expect(accepts(g, bad), bad).toBe(false);
  });

  it('lets alternatives span lines until the next rule', () => {
    const g = Grammar.fromGbnf('root ::= "a"\n  | "b"\n  | ( "c"\n "d" )\nother ::= "x"');
    for (const s of ['a', 'b', 'cd']) expect(accepts(g, s)).toBe(true);
    expect(accepts(g, 'x')).toBe(false);
  });

  it('counts repetitions exactly', () => {
    const g = Grammar.fromGbnf('root ::= "a"{2} "b"{1,} "c"{0,2} "d"{3,4}');
    expect(accepts(g, 'aabddd')).toBe(true);
    expect(accepts(g, 'aabbbccdddd')).toBe(true);
    for (const s of ['abddd', 'aaabddd', 'aaddd', 'aabcccddd', 'aabdd', 'aabddddd']) expect(accepts(g, s), s).toBe(false);
  });

  it('names the rule and position of errors', () => {
    let e = gbnfError('root ::= "a" thing\n');
    expect(e.message).toMatch(/undefined rule 'thing'.*line 1, column 14/);
    e = gbnfError('root ::= "a"\nx ::= "b" | missing');
    expect(e.message).toMatch(/undefined rule 'missing' referenced in rule 'x' at line 2, column 13/);
    expect(gbnfError('root "a"').message).toMatch(/expected '::=' after rule name 'root'/);
    expect(gbnfError('root ::= "abc').message).toMatch(/string literal at line 1, column 10 is not closed/);
    expect(gbnfError('root ::= ( "a" | "b"').message).toMatch(/'\(' at line 1, column 10 is not closed/);
    expect(gbnfError('root ::= "a" )').message).toMatch(/unmatched '\)'/);
    expect(gbnfError('root ::= [a-').message).toMatch(/character class at line 1, column 10 is not closed/);
    expect(gbnfError('root ::= [z-a]').message).toMatch(/runs backwards/);
    expect(gbnfError('root ::= "\\q"').message).toMatch(/unknown escape '\\q' at line 1, column 11/);
    expect(gbnfError('root ::= "\\x4"').message).toMatch(/needs 2 hex digits/);
    expect(gbnfError('root ::= "a"{3,1}').message).toMatch(/minimum above its maximum/);
    expect(gbnfError('root ::= "a"{2').message).toMatch(/malformed repetition/);
    expect(gbnfError('root ::= "a"\nroot ::= "b"').message).toMatch(/rule 'root' is defined twice \(again at line 2, column 1\)/);
    expect(gbnfError('start ::= "a"').message).toMatch(/no rule 'root'/);
    expect(gbnfError('root ::= @').message).toMatch(/unexpected '@' at line 1, column 10/);
  });

  it('refuses left recursion, direct and through other rules, and allows right recursion', () => {
    expect(gbnfError('root ::= root "a" | "b"').message).toMatch(/left recursion in rule 'root'/);
    const e = gbnfError('root ::= expr\nexpr ::= term "+" expr | term\nterm ::= opt expr "*" | "x"\nopt ::= "-"?');
    expect(e.message).toMatch(/left recursion/);
    expect(e.message).toMatch(/'expr'/);
    expect(e.message).toMatch(/'term'/);
    const g = Grammar.fromGbnf('root ::= "x" root | "" \n');
    expect(accepts(g, 'xxxxx')).toBe(true);
    // A loop whose body may be empty is not left recursion that grows the stack.
    const h = Grammar.fromGbnf('root ::= ("a"?)* "b"');
    expect(accepts(h, 'aab')).toBe(true);
    expect(accepts(h, 'b')).toBe(true);
  });
});

describe('matcher', () => {
  it('keeps partial UTF-8 state byte by byte and refuses malformed UTF-8', () => {
    const g = Grammar.fromGbnf('root ::= [^"\\\\]* "!"');
    const text = 'aé€😀z!';
    expect(acceptsByteByByte(g, text)).toBe(true);
    const m = new GrammarMatcher(g);
    const bytes = enc.encode('€');
    expect(m.acceptByte(bytes[0])).toBe(true);
    expect(m.canEnd).toBe(false);
    expect(m.acceptByte(0x41)).toBe(false); // a continuation byte is due
    expect(m.acceptByte(bytes[1])).toBe(true);
    expect(m.acceptByte(bytes[2])).toBe(true);
    // Overlong forms, surrogates, and bytes past U+10FFFF encode nothing.
    for (const bad of [[0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0x80], [0xff]]) {
      expect(new GrammarMatcher(g).acceptBytes(Uint8Array.from(bad)), bad.join(',')).toBe(false);
    }
    for (const edge of [0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xffff, 0x10000, 0x10ffff]) {
      expect(accepts(g, String.fromCodePoint(edge) + '!'), edge.toString(16)).toBe(true);
    }
  });

  it('matches classes of multi-byte ranges exactly', () => {
    const g = Grammar.fromGbnf('root ::= [\\u00e0-\\u00ff\\u0400-\\u04ff\\U0001F600-\\U0001F64F]+');
    const r = rng(7);
    for (let i = 0; i < 300; i++) {
      const cp = [0x41, 0xdf, 0xe0, 0xff, 0x100, 0x3ff, 0x400, 0x4ff, 0x500, 0x1f5ff, 0x1f600, 0x1f64f, 0x1f650][Math.floor(r() * 13)];
      const expected = (cp >= 0xe0 && cp <= 0xff) || (cp >= 0x400 && cp <= 0x4ff) || (cp >= 0x1f600 && cp <= 0x1f64f);
      expect(acceptsByteByByte(g, String.fromCodePoint(cp))).toBe(expected);
    }
  });

  it('rejects without changing state, and reports canEnd / mustEnd', () => {
    const g = Grammar.fromGbnf('root ::= "ab" "c"?');
    const m = new GrammarMatcher(g);
    expect(m.acceptString('ax')).toBe(false);
    expect(m.acceptString('ab')).toBe(true);
    expect(m.canEnd).toBe(true);
    expect(m.mustEnd).toBe(false);
    const c = m.clone();
    expect(c.acceptString('c')).toBe(true);
    expect(c.mustEnd).toBe(true);
    expect(c.acceptByte(0x63)).toBe(false);
    expect(m.mustEnd).toBe(false); // the clone moved alone
    expect(m.acceptByte(300)).toBe(false);
  });

  it('follows ambiguous alternatives together', () => {
    const g = Grammar.fromGbnf('root ::= x* "ab" | "a" y\nx ::= "a" | "ab" | "aba"\ny ::= "b"+ "c"');
    for (const s of ['ab', 'aab', 'ababab', 'abaab', 'abbbc', 'abc']) expect(accepts(g, s), s).toBe(true);
    for (const s of ['a', 'abca', 'b', 'abab c']) expect(accepts(g, s), s).toBe(false);
  });

  it('bounds its state: rebuilds the automaton when it grows, refuses runaway ambiguity', () => {
    const g = Grammar.fromGbnf('root ::= "(" root ")" | "x"');
    const m = new GrammarMatcher(g);
    const deep = '('.repeat(5000) + 'x' + ')'.repeat(5000);
    for (const b of enc.encode(deep)) expect(m.acceptByte(b)).toBe(true);
    expect(m.canEnd).toBe(true);
    expect(m.mustEnd).toBe(true);
    expect(m.engine.gen).toBeGreaterThan(0);
    expect(m.engine.states.length).toBeLessThan(10_000);
    const wild = Grammar.fromGbnf('root ::= "a" root "b" | "a" root "c" | "a" root "d" | "a" root "e" | ""');
    const w = new GrammarMatcher(wild);
    expect(() => {
      for (let i = 0; i < 10; i++) w.acceptByte(0x61);
    }).toThrow(/too ambiguous/);
  });

  it('nests deeply through recursion', () => {
    const g = Grammar.fromGbnf('root ::= "(" root ")" | "x"');
    const deep = '('.repeat(2000) + 'x' + ')'.repeat(2000);
    expect(accepts(g, deep)).toBe(true);
    expect(accepts(g, deep + ')')).toBe(false);
    expect(accepts(g, deep.slice(1))).toBe(false);
  });
});

describe('regex', () => {
  const alphabet = ['a', 'b', 'c', 'd', 'o', 'l', 'u', 'r', '0', '7', '-', '@', '.', ' ', 'é', '\n', '"', '\\', 'x', '_'];
  /** Patterns with strings they match. */
  const cases: [string, string[]][] = [
    ['a(b|c)*d?', ['a', 'abcbd']], ['[a-c]{2,4}x', ['abx', 'cccax']], ['\\d{3}-\\d{2}', ['123-45']], ['(?:ab|a)+b', ['abaab', 'ab']],
    ['[^ab]+', ['cd é']], ['\\w+@\\w+\\.c', ['a_0@b.c']], ['colou?r', ['color', 'colour']], ['x{0,2}b{1,}', ['xxbbb', 'b']],
    ['^a.c$', ['abc', 'a"c']], ['(a|)b', ['ab', 'b']], ['[\\w-]+', ['a-_0']], ['\\s*a\\S', ['  \nab', 'a@']], ['[.\\-]{2}', ['.-']],
    ['é+\\\\', ['éé\\']], ['(?<n>ab)+?c', ['ababc']], ['\\x61\\u0062[\\x30-\\x39]*', ['ab07']], ['a{2,}?', ['aaa']], ['"a\\\\"', ['"a\\"']],
  ];
  it.each(cases)('%s matches the same whole strings as RegExp', (p, examples) => {
    const g = Grammar.fromRegex(p);
    const js = new RegExp(`^(?:${p.replace(/^\^/, '').replace(/\$$/, '')})$`);
    for (const s of examples) {
      expect(js.test(s), s).toBe(true);
      expect(acceptsByteByByte(g, s), s).toBe(true);
    }
    const r = rng(p.length * 31 + 1);
    for (let i = 0; i < 400; i++) {
      const n = Math.floor(r() * 7);
      let s = '';
      for (let k = 0; k < n; k++) s += alphabet[Math.floor(r() * alphabet.length)];
      expect(accepts(g, s), `${JSON.stringify(s)}`).toBe(js.test(s));
    }
  });

  it('accepts hand-picked matches', () => {
    expect(accepts(Grammar.fromRegex('\\d{3}-\\d{2}'), '123-45')).toBe(true);
    expect(accepts(Grammar.fromRegex('(?:ab|a)+b'), 'abaab')).toBe(true);
    expect(accepts(Grammar.fromRegex('[\\u{1F600}-\\u{1F64F}]+'), '😀🙏')).toBe(true);
    expect(accepts(Grammar.fromRegex('.'), '\n')).toBe(false);
  });

  it('refuses what a grammar cannot hold, naming it', () => {
    const err = (p: string) => {
      try {
        Grammar.fromRegex(p);
      } catch (e) {
        expect(e).toBeInstanceOf(GrammarError);
        return (e as Error).message;
      }
      throw new Error(`accepted ${p}`);
    };
    expect(err('(a)\\1')).toMatch(/backreference '\\1'/);
    expect(err('(?<x>a)\\k<x>')).toMatch(/backreference/);
    expect(err('a(?=b)')).toMatch(/lookaround '\(\?='/);
    expect(err('(?<!a)b')).toMatch(/lookaround '\(\?<!'/);
    expect(err('a^b')).toMatch(/anchor '\^' is only supported at the start/);
    expect(err('a$b')).toMatch(/anchor '\$' is only supported at the end/);
    expect(err('\\bword')).toMatch(/word boundary/);
    expect(err('\\p{L}')).toMatch(/Unicode property/);
    expect(err('(?i)a')).toMatch(/group modifier/);
    expect(err('a**')).toMatch(/nothing to repeat/);
    expect(err('(ab')).toMatch(/'\(' is not closed at offset 0/);
    expect(err('[ab')).toMatch(/'\[' is not closed/);
  });

  it('writes the JSON-escaped form of strings in jsonString mode', () => {
    const p = 'a"b\\\\c\\n[\\x00-\\x02]';
    const g = Grammar.fromGbnf(`root ::= "\\"" ${regexToGbnf(p, { jsonString: true })} "\\""`);
    for (const v of ['a"b\\c\n\u0000', 'a"b\\c\n\u0002']) {
      const json = JSON.stringify(v);
      expect(accepts(g, json), json).toBe(true);
      expect(new RegExp(`^${p}$`).test(JSON.parse(json))).toBe(true);
    }
    expect(accepts(g, '"a"b\\c\\n\\u0000"')).toBe(false); // a raw quote is not JSON
  });
});

const PERSON = {
  $defs: {
    address: {
      type: 'object',
      properties: { street: { type: 'string', maxLength: 12 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
      required: ['street'],
    },
  },
  type: 'object',
  description: 'ignored',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 20 },
    age: { type: 'integer' },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 8 }, minItems: 1, maxItems: 3 },
    address: { $ref: '#/$defs/address' },
    score: { type: ['number', 'null'] },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'role', 'tags'],
  additionalProperties: false,
};

describe('JSON Schema', () => {
  const g = Grammar.fromJsonSchema(PERSON);
  const valid = [
    '{"name":"Ann","age":31,"role":"admin","tags":["x"]}',
    '{"name": "Bo", "age": -4, "role": "guest", "tags": ["a", "b", "c"], "address": {"street": "Main 1", "zip": "12345"}, "score": 1.5e3, "active": true}',
    '{"name":"é😀\\"\\n","age":0,"role":"user","tags":[""],"score":null}',
    '{"name":"Z","age":7,"role":"user","tags":["q"],"address":{"street":""},"active":false}',
  ];
  const invalid = [
    '{"age":31,"name":"Ann","role":"admin","tags":["x"]}', // required out of declared order
    '{"name":"Ann","age":31,"role":"admin"}', // tags missing
    '{"name":"","age":31,"role":"admin","tags":["x"]}', // minLength
    '{"name":"Ann","age":31,"role":"root","tags":["x"]}', // enum
    '{"name":"Ann","age":31.5,"role":"admin","tags":["x"]}', // integer
    '{"name":"Ann","age":31,"role":"admin","tags":[]}', // minItems
    '{"name":"Ann","age":31,"role":"admin","tags":["a","b","c","d"]}', // maxItems
    '{"name":"Ann","age":31,"role":"admin","tags":["123456789"]}', // item maxLength
    '{"name":"Ann","age":31,"role":"admin","tags":["x"],"extra":1}', // additional property
    '{"name":"Ann","age":31,"role":"admin","tags":["x"],"address":{"zip":"12345"}}', // nested required
    '{"name":"Ann","age":31,"role":"admin","tags":["x"],"address":{"street":"a","zip":"1234"}}', // pattern
    '{"name":"Ann","age":31,"role":"admin","tags":["x"],"score":"1"}', // type list
    '{"name":"Ann","age":31,"role":"admin","tags":["x"],}', // trailing comma
    '{"name":"A\nn","age":31,"role":"admin","tags":["x"]}', // raw control character
    '{"name":"Ann",  "age":31,"role":"admin","tags":["x"]}', // two spaces
    '{"name":"Ann",\n"age":31,"role":"admin","tags":["x"]}', // newline
    '{"name":"Ann","age":0123,"role":"admin","tags":["x"]}', // leading zero
    '{"name":"Ann","age":31,"role":"admin","tags":["x"]', // unclosed
  ];
  it('accepts valid instances, whole and byte by byte', () => {
    for (const s of valid) {
      JSON.parse(s);
      expect(accepts(g, s), s).toBe(true);
      expect(acceptsByteByByte(g, s), s).toBe(true);
    }
  });
  it('rejects invalid instances', () => {
    for (const s of invalid) expect(accepts(g, s), s).toBe(false);
    for (const s of invalid) expect(acceptsByteByByte(g, s), s).toBe(false);
  });

  it('names unsupported keywords with their JSON pointer', () => {
    const err = (schema: unknown) => {
      try {
        Grammar.fromJsonSchema(schema);
      } catch (e) {
        expect(e).toBeInstanceOf(GrammarError);
        return (e as Error).message;
      }
      throw new Error('schema accepted');
    };
    expect(err({ type: 'object', properties: { a: { not: { type: 'string' } } } })).toBe("unsupported JSON Schema keyword 'not' at #/properties/a");
    expect(err({ type: 'array', items: { type: 'integer', minimum: 3 } })).toBe("unsupported JSON Schema keyword 'minimum' at #/items");
    expect(err({ $defs: { x: { if: {} } }, $ref: '#/$defs/x' })).toBe("unsupported JSON Schema keyword 'if' at #/$defs/x");
    expect(err({ type: 'object', patternProperties: {} })).toMatch(/'patternProperties' at #$/);
    expect(err({ properties: { 'a/b': { type: 'string', format: 'ipv4' } } })).toMatch(/format "ipv4" at #\/properties\/a~1b\/format/);
    expect(err({ $ref: 'http://example.com/s.json' })).toMatch(/only local '\$ref'/);
    expect(err({ $ref: '#/$defs/missing' })).toMatch(/does not resolve/);
    expect(err({ type: 'string', pattern: '(a)\\1' })).toMatch(/backreference.*#\/pattern/);
    expect(err({ type: 'object', required: ['a'] })).toMatch(/required property 'a'/);
    expect(err({ type: 'array', minItems: 3, maxItems: 2 })).toMatch(/between 3 and 2 items/);
    expect(err({ anyOf: [{ type: 'string' }, { type: 'bogus' }] })).toMatch(/unsupported JSON Schema type "bogus" at #\/anyOf\/1\/type/);
    expect(err(false)).toMatch(/allows no value/);
    expect(err({ type: 'integer', const: 'a' })).toMatch(/no value of 'const' at #/);
  });

  it('handles const, nullable, anyOf/oneOf, allOf, prefixItems, formats and recursion', () => {
    const check = (schema: unknown, good: string[], bad: string[]) => {
      const gr = Grammar.fromJsonSchema(schema);
      for (const s of good) expect(accepts(gr, s), `${JSON.stringify(schema)} ⟵ ${s}`).toBe(true);
      for (const s of bad) expect(accepts(gr, s), `${JSON.stringify(schema)} ⟵ ${s}`).toBe(false);
    };
    check({ const: { a: [1, 'x'] } }, ['{"a":[1,"x"]}'], ['{"a":[1,"y"]}', '{}']);
    check({ type: 'string', enum: ['a', 1, null] }, ['"a"'], ['1', 'null']);
    check({ enum: ['x', 2], allOf: [{ type: 'integer' }] }, ['2'], ['"x"']);
    check({ type: 'string', nullable: true }, ['"x"', 'null'], ['1']);
    check({ anyOf: [{ type: 'integer' }, { type: 'string', maxLength: 2 }] }, ['12', '"ab"'], ['"abc"', 'true']);
    check({ oneOf: [{ const: 1 }, { const: 'one' }] }, ['1', '"one"'], ['2']);
    check({ type: 'object', properties: { a: { type: 'integer' } }, anyOf: [{ required: ['a'] }] }, ['{"a":1}'], ['{}']);
    check({ allOf: [{ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] }, { properties: { b: { type: 'boolean' } }, required: ['b'] }] },
      ['{"a":1,"b":true}'], ['{"a":1}', '{"b":true}', '{"b":true,"a":1}']);
    check({ type: 'array', prefixItems: [{ type: 'integer' }, { type: 'string' }], items: false }, ['[]', '[1]', '[1,"a"]'], ['[1,2]', '[1,"a",3]', '["a"]']);
    check({ type: 'array', prefixItems: [{ type: 'integer' }], items: { type: 'boolean' }, minItems: 2, maxItems: 3 }, ['[1,true]', '[1, false, true]'], ['[1]', '[1,true,true,true]', '[true,true]']);
    check({ type: 'array', minItems: 2 }, ['[1,"a"]', '[{},[null]]'], ['[1]', '[]']);
    check({ type: 'string', minLength: 2, maxLength: 3 }, ['"é😀"', '"abc"', '"\\n\\t"'], ['"a"', '"abcd"']);
    check({ type: 'string', format: 'date' }, ['"2024-02-29"'], ['"2024-13-01"', '"24-01-01"']);
    check({ type: 'string', format: 'time' }, ['"23:59:59Z"', '"01:02:03.5+05:30"'], ['"24:00:00Z"', '"12:00:00"']);
    check({ type: 'string', format: 'date-time' }, ['"2024-01-31T12:00:00Z"'], ['"2024-01-31 12:00:00Z"']);
    check({ type: 'string', format: 'uuid' }, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567e89b12d3a456426614174000"']);
    check({ type: 'string', format: 'email' }, ['"a.b+c@example.co.uk"'], ['"a@b"', '"@example.com"', '"a b@example.com"']);
    check({ type: 'object', properties: { id: { type: 'integer' } }, additionalProperties: { type: 'string' } },
      ['{"id":1,"x":"y","z":"w"}', '{}', '{"x":"y"}', '{"idx":"1"}', '{"i":"1"}'], ['{"id":1,"x":2}', '{"x":"y","id":1}', '{"id":"1"}']);
    check({ type: 'object', additionalProperties: true }, ['{"any":[1,{"b":null}]}', '{}'], ['[]']);
    check({ type: 'object' }, ['{}', '{ }'], ['{"a":1}']);
    check({ type: 'boolean', description: 'x', title: 't', default: true, examples: [true], $schema: 'https://json-schema.org/draft/2020-12/schema', $id: 'x' }, ['true'], ['1']);
    check({ type: 'number' }, ['-0.5', '1e10', '12.75E-3'], ['01', '.5', '1.', '+1']);
    check({ definitions: { node: { type: 'object', properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/definitions/node' } } }, required: ['v'] } }, $ref: '#/definitions/node' },
      ['{"v":1}', '{"v":1,"kids":[{"v":2,"kids":[{"v":3}]},{"v":4}]}'], ['{"v":1,"kids":[{}]}']);
    check({ type: 'object', properties: { self: { $ref: '#' } } }, ['{}', '{"self":{"self":{}}}'], ['{"self":1}']);
  });

  it('composes with rule prefixes inside a bigger grammar', () => {
    const a = jsonSchemaToGbnf({ type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] }, { rulePrefix: 'a-' });
    const b = jsonSchemaToGbnf({ type: 'array', items: { type: 'boolean' } }, { rulePrefix: 'b-', rootName: 'flags' });
    expect(a.startsWith('a-root ::= ')).toBe(true);
    expect(b.startsWith('flags ::= ')).toBe(true);
    const g2 = Grammar.fromGbnf(`root ::= "call " a-root " then " flags\n${a}${b}`);
    expect(accepts(g2, 'call {"x": 1} then [true, false]')).toBe(true);
    expect(accepts(g2, 'call {"x": true} then [1]')).toBe(false);
  });

  it('jsonObject accepts any object and nothing else', () => {
    const o = Grammar.jsonObject();
    expect(accepts(o, '{"a": [1, 2.5, {"b": null}], "c": "d", "e": {}}')).toBe(true);
    for (const s of ['[]', '"x"', '1', '{"a":}', '{a:1}']) expect(accepts(o, s), s).toBe(false);
  });
});

/** Random byte strings made of pieces of `chars`' UTF-8, cut anywhere, plus stray bytes. */
function randomVocab(r: () => number, size: number, chars: string[]): (Uint8Array | null)[] {
  const out: (Uint8Array | null)[] = [];
  for (let i = 0; i < size; i++) {
    const x = r();
    if (x < 0.03) out.push(null);
    else if (x < 0.05) out.push(new Uint8Array(0));
    else if (x < 0.1) out.push(Uint8Array.of(Math.floor(r() * 256)));
    else {
      let s = '';
      const n = 1 + Math.floor(r() * 4);
      for (let k = 0; k < n; k++) s += chars[Math.floor(r() * chars.length)];
      const bytes = enc.encode(s);
      const from = r() < 0.3 ? Math.floor(r() * bytes.length) : 0;
      const to = r() < 0.3 ? from + 1 + Math.floor(r() * (bytes.length - from)) : bytes.length;
      out.push(bytes.slice(from, to));
    }
  }
  return out;
}

/** A random GBNF grammar over `chars`: rules refer only to later rules, or to any rule after a literal. */
function randomGrammar(r: () => number, chars: string[]): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const lit = () => JSON.stringify(pick(chars) + (r() < 0.3 ? pick(chars) : ''));
  const atoms = () => pick([lit(), lit(), '[a-c]', '[^a]', '[é-ë]', '.', '[\\x00-\\x7f]', '[😀-😂]']);
  const nRules = 2 + Math.floor(r() * 3);
  const rules: string[] = [];
  for (let i = 0; i < nRules; i++) {
    const alts: string[] = [];
    const nAlts = 1 + Math.floor(r() * 3);
    for (let a = 0; a < nAlts; a++) {
      const items: string[] = [];
      const nItems = 1 + Math.floor(r() * 3);
      for (let k = 0; k < nItems; k++) {
        let item: string;
        const x = r();
        if (x < 0.25 && i + 1 < nRules) item = `r${i + 1 + Math.floor(r() * (nRules - i - 1))}`;
        else if (x < 0.35 && k > 0 && items[0].startsWith('"')) item = `r${Math.floor(r() * nRules)}`;
        else item = atoms();
        const q = r();
        item += q < 0.15 ? '*' : q < 0.25 ? '+' : q < 0.35 ? '?' : q < 0.4 ? '{1,2}' : q < 0.45 ? '{0,9}' : q < 0.48 ? '{2,14}' : '';
        items.push(item);
      }
      alts.push(items.join(' '));
    }
    rules.push(`${i === 0 ? 'root' : `r${i}`} ::= ${alts.join(' | ')}`);
  }
  return rules.join('\n').replace(/\br0\b/g, 'root');
}

describe('token masks', () => {
  it('trie walk equals the naive mask on random grammars, vocabularies and paths', () => {
    const chars = ['a', 'b', 'c', 'é', '€', '😀', '\n', 'x', '"', 'ab'];
    let compared = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const r = rng(seed);
      let g: Grammar;
      try {
        g = Grammar.fromGbnf(randomGrammar(r, chars));
      } catch (e) {
        if (e instanceof GrammarError && /left recursion/.test(e.message)) continue;
        throw e;
      }
      const size = [37, 97, 251, 1001][seed % 4];
      const vocab = new TokenVocabulary(randomVocab(r, size, chars));
      const ends = [Math.floor(r() * size), size - 1];
      const c = new GrammarConstraint(g, vocab, ends);
      for (let step = 0; step < 25; step++) {
        const fast = c.allowed();
        const slow = naiveAllowed(c.matcher, vocab, ends);
        expect(Array.from(fast)).toEqual(Array.from(slow));
        compared++;
        const ids = [...fast.keys()].filter((i) => fast[i]);
        if (!ids.length || c.done) break;
        const id = ids[Math.floor(r() * ids.length)];
        c.accept(id);
        if (c.done) break;
      }
    }
    expect(compared).toBeGreaterThan(300);
  });

  it('shares masks across counted repetitions exactly (capped counts) and matches the naive mask', () => {
    // Tokens of at most 3 bytes, so counts above 4 are capped in the mask cache.
    const pieces = ['a', 'b', '"', 'é'];
    const tokens: Uint8Array[] = [];
    for (const x of pieces) for (const y of ['', ...pieces]) for (const z of ['', ...pieces]) tokens.push(enc.encode(x + y + z).slice(0, 3));
    tokens.push(Uint8Array.of(0xc3), Uint8Array.of(0xa9, 0x61));
    const vocab = new TokenVocabulary(tokens);
    const g = Grammar.fromGbnf('root ::= "\\"" ( [ab] | "é" ){0,25} "\\"" inner\ninner ::= ( "a" "b"{2,9} ){1,7} | "é"{5,}');
    for (let seed = 1; seed <= 12; seed++) {
      const r = rng(seed);
      const c = new GrammarConstraint(g, vocab, [0]);
      for (let step = 0; step < 80 && !c.done; step++) {
        const fast = c.allowed();
        expect(Array.from(fast)).toEqual(Array.from(naiveAllowed(c.matcher, vocab, [0])));
        const ids = [...fast.keys()].filter((i) => fast[i]);
        if (!ids.length) break;
        // Mostly avoid the quote early so the counts run down.
        const quiet = ids.filter((i) => !tokens[i].includes(0x22));
        const pool = quiet.length && r() < 0.93 ? quiet : ids;
        c.accept(pool[Math.floor(r() * pool.length)]);
      }
    }
    const s = Grammar.fromJsonSchema({ type: 'array', items: { type: 'string', maxLength: 30 }, maxItems: 20 });
    const ends = [tokens.length - 1];
    for (let seed = 1; seed <= 6; seed++) {
      const r = rng(seed + 100);
      const v2 = new TokenVocabulary([...tokens, enc.encode('['), enc.encode(']'), enc.encode(','), enc.encode('",'), enc.encode(' "')]);
      const c = new GrammarConstraint(s, v2, ends);
      for (let step = 0; step < 120 && !c.done; step++) {
        const fast = c.allowed();
        expect(Array.from(fast)).toEqual(Array.from(naiveAllowed(c.matcher, v2, ends)));
        const ids = [...fast.keys()].filter((i) => fast[i]);
        if (!ids.length) break;
        c.accept(ids[Math.floor(r() * ids.length)]);
      }
    }
  });

  it('accept, apply, end tokens and done', () => {
    const vocab = new TokenVocabulary([enc.encode('a'), enc.encode('ab'), enc.encode('b'), null, enc.encode('c'), enc.encode('</s>')]);
    const c = new GrammarConstraint(Grammar.fromGbnf('root ::= "a" "b"+'), vocab, [5]);
    expect(Array.from(c.allowed())).toEqual([1, 1, 0, 0, 0, 0]);
    expect(() => c.accept(2)).toThrow(GrammarError);
    expect(() => c.accept(5)).toThrow(/before the constrained text is complete/);
    c.accept(0);
    expect(Array.from(c.allowed())).toEqual([0, 0, 1, 0, 0, 0]);
    c.accept(2);
    expect(Array.from(c.allowed())).toEqual([0, 0, 1, 0, 0, 1]);
    const logits = Float32Array.from([1, 2, 3, 4, 5, 6, 7]);
    c.apply(logits);
    expect(Array.from(logits)).toEqual([-Infinity, -Infinity, 3, -Infinity, -Infinity, 6, -Infinity]);
    expect(c.done).toBe(false);
    c.accept(5);
    expect(c.done).toBe(true);
    expect(Array.from(c.allowed())).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => c.accept(2)).toThrow(/after the end/);
    // A grammar that cannot go on is done without an end token.
    const d = new GrammarConstraint(Grammar.fromGbnf('root ::= "ab"'), vocab, []);
    d.accept(1);
    expect(d.done).toBe(true);
  });

  const tok = sparrowMini();
  const vocab = TokenVocabulary.fromTokenizer(tok);
  const eos = tok.tokenToId('<|endoftext|>')!;
  const decoder = new TextDecoder('utf-8', { fatal: true });

  /**
   * Picks random allowed tokens until the constraint is done; after `settle` steps it prefers
   * single-byte closers (the end token, then " } ] digits : ,) so the walk ends. Returns the text.
   */
  function randomWalk(g: Grammar, seed: number, compareEvery: number, settle = 40): string {
    const r = rng(seed);
    const c = new GrammarConstraint(g, vocab, [eos]);
    const bytes: number[] = [];
    const closers = [...'"}]0123456789:,'].map((ch) => ch.charCodeAt(0));
    for (let step = 0; !c.done; step++) {
      expect(step).toBeLessThan(600);
      const mask = c.allowed();
      if (step % compareEvery === 0) expect(Array.from(mask)).toEqual(Array.from(naiveAllowed(c.matcher, vocab, [eos])));
      const ids = [...mask.keys()].filter((i) => mask[i]);
      expect(ids.length).toBeGreaterThan(0);
      let id = ids[Math.floor(r() * ids.length)];
      if (step >= settle) {
        if (mask[eos]) id = eos;
        else {
          for (const b of closers) {
            const single = ids.find((i) => vocab.tokenBytes[i]?.length === 1 && vocab.tokenBytes[i]![0] === b);
            if (single !== undefined) {
              id = single;
              break;
            }
          }
        }
      }
      c.accept(id);
      if (id !== eos) bytes.push(...vocab.tokenBytes[id]!);
    }
    return decoder.decode(Uint8Array.from(bytes));
  }

  it('random walks over the real vocabulary give valid instances (trie mask = naive mask)', () => {
    const g = Grammar.fromJsonSchema(PERSON);
    for (let seed = 1; seed <= 6; seed++) {
      const text = randomWalk(g, seed, seed === 1 ? 1 : 7);
      const v = JSON.parse(text);
      expect(Object.keys(v).slice(0, 4)).toEqual(['name', 'age', 'role', 'tags']);
      const order = Object.keys(PERSON.properties);
      const keys = Object.keys(v);
      expect(keys.every((k) => order.includes(k))).toBe(true);
      expect(keys.map((k) => order.indexOf(k))).toEqual([...keys.map((k) => order.indexOf(k))].sort((a, b) => a - b));
      expect(typeof v.name === 'string' && [...v.name].length >= 1 && [...v.name].length <= 20).toBe(true);
      expect(Number.isInteger(v.age)).toBe(true);
      expect(['admin', 'user', 'guest']).toContain(v.role);
      expect(Array.isArray(v.tags) && v.tags.length >= 1 && v.tags.length <= 3).toBe(true);
      for (const t of v.tags) expect(typeof t === 'string' && [...t].length <= 8).toBe(true);
      if ('address' in v) {
        expect(typeof v.address.street).toBe('string');
        expect([...v.address.street].length).toBeLessThanOrEqual(12);
        if ('zip' in v.address) expect(v.address.zip).toMatch(/^[0-9]{5}$/);
        expect(Object.keys(v.address).every((k) => k === 'street' || k === 'zip')).toBe(true);
      }
      if ('score' in v) expect(v.score === null || typeof v.score === 'number').toBe(true);
      if ('active' in v) expect(typeof v.active).toBe('boolean');
    }
  });

  it('random walks under jsonObject and a recursive schema parse', () => {
    const tree = { $defs: { n: { type: 'object', properties: { id: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/n' }, maxItems: 2 } }, required: ['id', 'kids'] } }, $ref: '#/$defs/n' };
    const check = (n: any): void => {
      expect(Object.keys(n)).toEqual(['id', 'kids']);
      expect(Number.isInteger(n.id)).toBe(true);
      expect(n.kids.length).toBeLessThanOrEqual(2);
      n.kids.forEach(check);
    };
    const gt = Grammar.fromJsonSchema(tree);
    for (let seed = 11; seed <= 14; seed++) check(JSON.parse(randomWalk(gt, seed, 9, 25)));
    const go = Grammar.jsonObject();
    for (let seed = 21; seed <= 24; seed++) {
      const v = JSON.parse(randomWalk(go, seed, 9, 20));
      expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
    }
  });

  it('allows the tokens of any valid text (tokenizer encoding walked step by step)', () => {
    const g = Grammar.fromJsonSchema(PERSON);
    const c = new GrammarConstraint(g, vocab, [eos]);
    const text = '{"name": "Zoë 😀 \\"q\\"", "age": 12, "role": "guest", "tags": ["über", "x"], "address": {"street": "Rue é", "zip": "75001"}}';
    for (const id of tok.encode(text, { addSpecialTokens: false })) {
      expect(c.allowed()[id]).toBe(1);
      c.accept(id);
    }
    expect(c.allowed()[eos]).toBe(1);
    expect(c.done).toBe(true);
  });
});

describe('Tokenizer.tokenBytes', () => {
  const texts = ['Hello, world! {"a": [1, 2]}', 'naïve café — 日本語 😀👨‍👩‍👧', '  tabs\tand\nnewlines\r\n  ', 'x'];

  it('byte-level BPE: every id, and encodings concatenate to the text', () => {
    const tok = sparrowMini();
    const bytes = tok.tokenBytes();
    expect(bytes.length).toBe(tok.vocabSize);
    const dec = new TextDecoder('utf-8', { fatal: true });
    const singles = new Set<number>();
    for (let id = 0; id < bytes.length; id++) {
      const b = bytes[id];
      if (tok.isSpecial(id)) {
        expect(b).toBeNull();
        continue;
      }
      expect(b && b.length > 0).toBe(true);
      if (b!.length === 1) singles.add(b![0]);
      let text: string | null = null;
      try {
        text = dec.decode(b!);
      } catch {
        // A piece of a character: checked through whole texts below.
      }
      if (text !== null) expect(text, `id ${id}`).toBe(tok.decode([id]));
    }
    expect(singles.size).toBe(256);
    for (const t of texts) {
      const ids = tok.encode(t, { addSpecialTokens: false });
      expect(Buffer.concat(ids.map((id) => bytes[id]!)).toString('utf8')).toBe(t);
    }
  });

  it('SentencePiece: ▁ as space, <0xAB> byte fallback, control tokens null', () => {
    const json = JSON.parse(readFileSync(join(TOKENIZERS, 'spm-bpe', 'tokenizer.json'), 'utf8'));
    const cfg = JSON.parse(readFileSync(join(TOKENIZERS, 'spm-bpe', 'tokenizer_config.json'), 'utf8'));
    // Without the Prepend normalizer the text is only respelled (" " → "▁"), which the bytes undo.
    const plain = Tokenizer.fromJSON({ ...json, normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' } }, cfg);
    const prepended = Tokenizer.fromJSON(json, cfg);
    const unigram = Tokenizer.fromJSON(readFileSync(join(TOKENIZERS, 'unigram', 'tokenizer.json'), 'utf8'), JSON.parse(readFileSync(join(TOKENIZERS, 'unigram', 'tokenizer_config.json'), 'utf8')));
    const ubytes = unigram.tokenBytes();
    const ids = unigram.encode('the cat', { addSpecialTokens: false });
    expect(Buffer.concat(ids.map((id) => ubytes[id]!)).toString('utf8')).toBe(' the cat');
    for (const tok of [plain, prepended]) {
      const bytes = tok.tokenBytes();
      expect(bytes[tok.tokenToId('<s>')!]).toBeNull();
      expect(bytes[tok.tokenToId('<unk>')!]).toBeNull();
      expect(Array.from(bytes[tok.tokenToId('<0x0A>')!]!)).toEqual([10]);
      expect(Array.from(bytes[tok.tokenToId('▁the')!]!)).toEqual(Array.from(enc.encode(' the')));
      for (const t of texts) {
        const ids = tok.encode(t, { addSpecialTokens: false });
        expect(ids.some((id) => tok.idToToken(id) === '<unk>')).toBe(false);
        const joined = Buffer.concat(ids.map((id) => bytes[id]!)).toString('utf8');
        expect(joined).toBe(tok === plain ? t : ` ${t}`);
      }
    }
  });
});
