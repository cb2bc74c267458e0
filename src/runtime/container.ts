// The file layout of the CLI's saved chats and the local server's stored sessions: a fixed prefix,
// a JSON header and a payload.
//
//   offset  size    field
//   0       8       magic: 8 ASCII characters naming the kind of file ("SPRWCHAT", "SPRWSESS")
//   8       4       version of that kind's header, u32 little-endian
//   12      4       n: bytes of the header, u32 little-endian
//   16      n       header: a JSON object, UTF-8 (what it holds is the kind's business)
//   16 + n  rest    payload, to the end of the file (for chats and sessions: a state snapshot)
//
// Each kind keeps its own magic and version numbers, so every file written before this module
// existed (chat files version 1, session files versions 1 and 2) has this layout and still reads,
// and a reader of one kind never mistakes a file of another for its own. The container adds no
// checksum: the payloads are state snapshots (src/runtime/state.ts), which carry their own crc32
// and are checked on restore, and a damaged header fails the JSON parse or the kind's checks.

export const PREFIX_BYTES = 16;

/** A kind of file: its magic, the version it writes and the versions it reads. */
export interface ContainerKind {
  magic: string;
  version: number;
  readable: readonly number[];
}

export type ContainerProblem = 'magic' | 'version' | 'truncated' | 'header';

/**
 * Why bytes are not a readable container of a kind: not that kind ('magic'), a version it does not
 * read ('version', with the version), shorter than the header says ('truncated'), or a header that
 * is not a JSON object ('header'; the message says what it is instead).
 */
export class ContainerError extends Error {
  constructor(readonly problem: ContainerProblem, message: string, readonly version?: number) {
    super(message);
    this.name = 'ContainerError';
  }
}

export interface Container {
  version: number;
  header: Record<string, unknown>;
  /** The bytes after the header: a view of the input, not a copy. */
  payload: Uint8Array;
}

function checkKind(kind: ContainerKind): void {
  if (!/^[\x20-\x7e]{8}$/.test(kind.magic)) throw new RangeError(`a container magic is 8 ASCII characters, got ${JSON.stringify(kind.magic)}`);
}

/** A container of `kind` at its current version. */
export function encodeContainer(kind: ContainerKind, header: Record<string, unknown>, payload: Uint8Array): Uint8Array {
  checkKind(kind);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(PREFIX_BYTES + json.length + payload.byteLength);
  for (let i = 0; i < 8; i++) out[i] = kind.magic.charCodeAt(i);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, kind.version, true);
  dv.setUint32(12, json.length, true);
  out.set(json, PREFIX_BYTES);
  out.set(payload, PREFIX_BYTES + json.length);
  return out;
}

/**
 * The version and header length from the first PREFIX_BYTES of `bytes` (more may follow; a reader
 * that wants the header only reads this much first). ContainerError when they are not `kind`'s.
 */
export function readPrefix(kind: ContainerKind, bytes: Uint8Array): { version: number; headerBytes: number } {
  checkKind(kind);
  if (bytes.length < PREFIX_BYTES) throw new ContainerError('magic', `not a ${kind.magic} file (${bytes.length} bytes)`);
  for (let i = 0; i < 8; i++) if (bytes[i] !== kind.magic.charCodeAt(i)) throw new ContainerError('magic', `not a ${kind.magic} file`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (!kind.readable.includes(version)) throw new ContainerError('version', `${kind.magic} version ${version} is not supported`, version);
  return { version, headerBytes: dv.getUint32(12, true) };
}

/** The header bytes as a JSON object; ContainerError('header') saying what they are otherwise. */
export function decodeHeader(bytes: Uint8Array): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new ContainerError('header', `not valid JSON (${(e as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ContainerError('header', 'not a JSON object');
  return doc as Record<string, unknown>;
}

/** A whole container of `kind`; ContainerError when it is not one. */
export function decodeContainer(kind: ContainerKind, bytes: Uint8Array): Container {
  const { version, headerBytes } = readPrefix(kind, bytes);
  const end = PREFIX_BYTES + headerBytes;
  if (end > bytes.length) throw new ContainerError('truncated', `truncated: the header needs ${end} bytes, the file has ${bytes.length}`);
  return { version, header: decodeHeader(bytes.subarray(PREFIX_BYTES, end)), payload: bytes.subarray(end) };
}
