// The file layout shared by saved chats and stored sessions (src/runtime/container.ts), and files
// as the CLI and the servers wrote them before it: byte for byte the same, and still read.
import { describe, expect, it } from 'vitest';
import { ContainerError, decodeContainer, encodeContainer, readPrefix, type ContainerKind } from '../src/runtime/container';
import { decodeChatFile, encodeChatFile } from '../src/cli';
import { decodeSessionFile, encodeSessionFile } from '../edge/store';

/** "MAGIC" · u32 version · u32 JSON length · JSON · payload, built by hand. */
function handBuilt(magic: string, version: number, json: string, payload: number[]): Uint8Array {
  const j = new TextEncoder().encode(json);
  const b = new Uint8Array(16 + j.length + payload.length);
  b.set(new TextEncoder().encode(magic));
  new DataView(b.buffer).setUint32(8, version, true);
  new DataView(b.buffer).setUint32(12, j.length, true);
  b.set(j, 16);
  b.set(payload, 16 + j.length);
  return b;
}

const KIND: ContainerKind = { magic: 'TESTFILE', version: 3, readable: [2, 3] };

const problem = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ContainerError);
    return (e as ContainerError).problem;
  }
  return 'none';
};

describe('container', () => {
  it('round-trips a header and a payload, and writes the documented layout', () => {
    const bytes = encodeContainer(KIND, { a: 1, s: 'é' }, new Uint8Array([1, 2, 3]));
    expect(bytes).toEqual(handBuilt('TESTFILE', 3, '{"a":1,"s":"é"}', [1, 2, 3]));
    expect(decodeContainer(KIND, bytes)).toEqual({ version: 3, header: { a: 1, s: 'é' }, payload: new Uint8Array([1, 2, 3]) });
    expect(readPrefix(KIND, bytes.subarray(0, 16))).toEqual({ version: 3, headerBytes: 16 });
    expect(decodeContainer(KIND, handBuilt('TESTFILE', 2, '{}', [])).version).toBe(2);
  });

  it('says why bytes are not a container of the kind', () => {
    const good = encodeContainer(KIND, { a: 1 }, new Uint8Array(4));
    expect(problem(() => decodeContainer(KIND, good.subarray(0, 10)))).toBe('magic');
    expect(problem(() => decodeContainer(KIND, handBuilt('OTHERKND', 3, '{}', [])))).toBe('magic');
    expect(problem(() => decodeContainer(KIND, handBuilt('TESTFILE', 1, '{}', [])))).toBe('version');
    expect(problem(() => decodeContainer(KIND, good.subarray(0, 20)))).toBe('truncated');
    expect(problem(() => decodeContainer(KIND, handBuilt('TESTFILE', 3, '{"a":', [])))).toBe('header');
    expect(problem(() => decodeContainer(KIND, handBuilt('TESTFILE', 3, '[1]', [])))).toBe('header');
    const badUtf8 = handBuilt('TESTFILE', 3, '{"a":"xx"}', []);
    badUtf8[22] = 0xff;
    expect(problem(() => decodeContainer(KIND, badUtf8))).toBe('header');
    expect(() => encodeContainer({ magic: 'SHORT', version: 1, readable: [1] }, {}, new Uint8Array())).toThrow(RangeError);
  });
});

describe('chat files (sparrow chat /save, /load)', () => {
  const messages = [{ role: 'user' as const, content: 'Hello there' }, { role: 'assistant' as const, content: 'Hi.' }];

  it('are written as version 1 files always were, and a version 1 file reads', () => {
    const v1 = handBuilt('SPRWCHAT', 1, JSON.stringify({ messages }), [83, 80, 82, 87, 7, 7]);
    expect(encodeChatFile(messages, new Uint8Array([83, 80, 82, 87, 7, 7]))).toEqual(v1);
    expect(decodeChatFile(v1, 'old.chat')).toEqual({ messages, snapshot: new Uint8Array([83, 80, 82, 87, 7, 7]) });
  });

  it('refuse other files, naming the file', () => {
    const ok = encodeChatFile(messages, new Uint8Array(8));
    expect(() => decodeChatFile(ok.subarray(0, 8), 'f')).toThrow(/^f is not a sparrow chat file$/);
    expect(() => decodeChatFile(encodeSessionFile({ id: 's', model: 'm', tokens: [], bytes: new Uint8Array(), createdAt: 0, updatedAt: 0 }), 'f')).toThrow(/^f is not a sparrow chat file$/);
    expect(() => decodeChatFile(handBuilt('SPRWCHAT', 2, '{}', []), 'f')).toThrow(/^f: chat file version 2 is not supported$/);
    expect(() => decodeChatFile(ok.subarray(0, 20), 'f')).toThrow(/^f is truncated$/);
    expect(() => decodeChatFile(handBuilt('SPRWCHAT', 1, '{"messages": [', []), 'f')).toThrow(/^f: the message list is not valid JSON \(/);
    expect(() => decodeChatFile(handBuilt('SPRWCHAT', 1, '"x"', []), 'f')).toThrow(/^f: the message list is not a JSON object$/);
    expect(() => decodeChatFile(handBuilt('SPRWCHAT', 1, '{}', []), 'f')).toThrow(/^f: messages is missing$/);
  });
});

describe('session files', () => {
  const s = { id: 'abc', model: 'm', owner: 'k1', tokens: [1, 2], bytes: new Uint8Array([5, 6]), createdAt: 10, updatedAt: 20 };

  it('are written as version 2 files always were; versions 1 and 2 read', () => {
    const v2 = handBuilt('SPRWSESS', 2, JSON.stringify({ id: 'abc', model: 'm', owner: 'k1', tokens: [1, 2], createdAt: 10, updatedAt: 20 }), [5, 6]);
    expect(encodeSessionFile(s)).toEqual(v2);
    expect(decodeSessionFile(v2)).toEqual(s);
    const v1 = handBuilt('SPRWSESS', 1, JSON.stringify({ id: 'abc', model: 'm', tokens: [1, 2], createdAt: 10, updatedAt: 20 }), [5, 6]);
    expect(decodeSessionFile(v1)).toEqual({ ...s, owner: '' });
  });

  it('anything else reads as absent', () => {
    expect(decodeSessionFile(encodeChatFile([], new Uint8Array(2)))).toBeNull();
    expect(decodeSessionFile(handBuilt('SPRWSESS', 3, '{"id":"a","model":"m","tokens":[]}', []))).toBeNull();
    expect(decodeSessionFile(handBuilt('SPRWSESS', 2, '{"id":"a","model":"m"}', []))).toBeNull();
    expect(decodeSessionFile(handBuilt('SPRWSESS', 2, '{"id":', []))).toBeNull();
  });
});
