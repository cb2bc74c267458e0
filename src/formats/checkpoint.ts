// One view of a checkpoint whatever it came from: an HF directory (config.json + model.safetensors,
// or a sharded model.safetensors.index.json), a GGUF or safetensors file, a URL (of a file or of an
// HF-style directory), bytes in memory, or an in-memory directory `{ files }` (Workers).
// Headers are parsed and validated on open; tensor bytes are read on demand.

import { ConfigError, FormatError } from './errors';
import type { DType, WeightDType } from './dtype';
import { isQuantized, numElements, storagePolicy, tensorByteSize, toF32 } from './dtype';
import type { ByteSource, ProgressFn, SourceInput } from './source';
import { bufferSource, concatBytes, fileSource, isByteSource, isUrl, nodeFs, openSource, urlSource } from './source';
import { looksLikeSafetensors, parseSafetensors } from './safetensors';
import { isGGUF, parseGGUF, readSparrowMetadata } from './gguf';
import { isLlamaCppLayout, openLlamaCpp } from './llamacpp';

export interface TensorInfo {
  name: string;
  dtype: DType;
  /** HF order: outermost dimension first, last dimension contiguous. */
  shape: number[];
  /** Absolute offset of the tensor's bytes in `source`. */
  byteOffset: number;
  byteLength: number;
  source: ByteSource;
}

export type CheckpointFormat = 'safetensors' | 'gguf';

export interface Checkpoint {
  readonly format: CheckpointFormat;
  /** Parsed HF config.json. */
  readonly config: any;
  readonly generationConfig?: any;
  /** tokenizer.json, unparsed. */
  readonly tokenizerJson?: string;
  readonly tokenizerConfig?: any;
  /** From chat_template.jinja, tokenizer_config.json or GGUF tokenizer.chat_template. */
  readonly chatTemplate?: string;
  /** safetensors `__metadata__` (of the first shard) or GGUF key/values. */
  readonly metadata: Record<string, unknown>;
  readonly tensors: Map<string, TensorInfo>;
  /** Raw bytes in the stored dtype; for in-memory sources a view that must not be written to. */
  read(name: string): Promise<{ info: TensorInfo; bytes: Uint8Array }>;
  /** Raw bytes into `dst` (exactly byteLength long), e.g. straight into WASM memory. */
  readInto(name: string, dst: Uint8Array): Promise<TensorInfo>;
  /** Values as a fresh Float32Array, whatever the stored dtype. */
  readF32(name: string): Promise<Float32Array>;
  /**
   * Bytes all tensors take as stored, or, with `dtypeOverride`, as held after conversion to that
   * dtype under storagePolicy (the quantize-on-load rules). For memory budgeting.
   */
  totalBytes(dtypeOverride?: WeightDType): number;
  close(): Promise<void>;
}

/** An in-memory HF directory: file name → bytes, or text for the JSON and template files. */
export interface MemoryFiles {
  files: Record<string, ArrayBuffer | ArrayBufferView | string>;
}

export type CheckpointInput = SourceInput | MemoryFiles;

export interface OpenOptions {
  /** Download progress of URL sources, per file. */
  onProgress?: ProgressFn;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
  /** Used instead of any config.json / GGUF config (e.g. for a bare safetensors buffer). */
  config?: any;
}

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

class CheckpointImpl implements Checkpoint {
  constructor(
    readonly format: CheckpointFormat,
    readonly config: any,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, unknown>,
    private readonly sources: ByteSource[],
    readonly generationConfig?: any,
    readonly tokenizerJson?: string,
    readonly tokenizerConfig?: any,
    readonly chatTemplate?: string,
  ) {}

  private info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new FormatError(`tensors[${JSON.stringify(name)}]`, 'not in the checkpoint');
    return info;
  }

  async read(name: string) {
    const info = this.info(name);
    return { info, bytes: await info.source.read(info.byteOffset, info.byteLength) };
  }

  async readInto(name: string, dst: Uint8Array) {
    const info = this.info(name);
    if (dst.length !== info.byteLength) {
      throw new FormatError(`tensors[${JSON.stringify(name)}]`, `holds ${info.byteLength} bytes, destination has ${dst.length}`);
    }
    if (info.source.readInto) await info.source.readInto(info.byteOffset, dst);
    else dst.set(await info.source.read(info.byteOffset, info.byteLength));
    return info;
  }

  async readF32(name: string) {
    const { info, bytes } = await this.read(name);
    return toF32(info.dtype, bytes, numElements(info.shape));
  }

  totalBytes(dtypeOverride?: WeightDType): number {
    let n = 0;
    for (const t of this.tensors.values()) {
      if (!dtypeOverride || !isFloat(t.dtype)) n += t.byteLength;
      else n += tensorByteSize(storagePolicy(t.name, t.shape, dtypeOverride), t.shape);
    }
    return n;
  }

  async close() {
    for (const s of this.sources) await s.close?.();
  }
}

function isFloat(d: DType): boolean {
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'f64' || isQuantized(d);
}

// ---------------------------------------------------------------------------------------------
// Directories: local, URL base, in memory

interface Dir {
  label: string;
  /** File names, where the directory can be listed (not over HTTP). */
  list?(): Promise<string[]>;
  /** Text of a file, or undefined when it does not exist. */
  text(name: string): Promise<string | undefined>;
  /** A byte source for a file, or undefined when it does not exist. */
  source(name: string): Promise<ByteSource | undefined>;
  /** Where the directory cannot be listed: why no weights were found and what to load instead. */
  missingWeights?(side: SideFiles): Promise<string>;
}

function isNotFound(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || (e as { name?: unknown })?.name === 'NotFound';
}

function joinPath(dir: string, name: string): string {
  return `${dir.replace(/[\\/]+$/, '')}/${name}`;
}

function localDir(path: string): Dir {
  return {
    label: path,
    async list() {
      const fs = await nodeFs(path);
      return fs.readdir(path);
    },
    async text(name) {
      const fs = await nodeFs(path);
      try {
        return await fs.readFile(joinPath(path, name), 'utf8');
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw new FormatError('path', `cannot read: ${(e as Error).message}`, joinPath(path, name));
      }
    },
    async source(name) {
      try {
        return await fileSource(joinPath(path, name));
      } catch (e) {
        if (e instanceof FormatError && e.detail === 'file not found') return undefined;
        throw e;
      }
    },
  };
}

function urlDir(base: string, opts: OpenOptions): Dir {
  const root = base.endsWith('/') ? base : `${base}/`;
  const doFetch = opts.fetch ?? globalThis.fetch;
  const at = (name: string) => new URL(name, root).toString();
  return {
    label: root,
    async text(name) {
      const url = at(name);
      let res: Response;
      try {
        res = await doFetch(url, { headers: opts.headers });
      } catch (e) {
        throw new FormatError('http', `fetch failed: ${(e as Error).message}`, url);
      }
      if (res.status === 404) {
        await res.body?.cancel();
        return undefined;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new FormatError('http', `status ${res.status}`, url);
      }
      return res.text();
    },
    async source(name) {
      try {
        return await urlSource(at(name), opts);
      } catch (e) {
        if (e instanceof FormatError && e.field === 'http' && /^status 404\b/.test(e.detail)) return undefined;
        throw e;
      }
    },
    async missingWeights(side) {
      const listed = await listedGGUFs(root, doFetch, opts.headers);
      const load = listed.length
        ? `load a GGUF by its file URL: ${listed.slice(0, 3).join(', ')}${listed.length > 3 ? ', …' : ''} (named in the directory's listing)`
        : `load a GGUF by its file URL, e.g. ${at('model.gguf')}`;
      return `found neither ${INDEX} nor ${SINGLE} at this URL${side.config === undefined ? ' (nor config.json)' : ''}; ` +
        `a directory URL cannot be listed, so no other weight file is looked for: ${load}`;
    },
  };
}

/**
 * The .gguf files that a server's directory listing (an HTML index page, as nginx autoindex or
 * `python -m http.server` serve) links to, as absolute URLs under `root`; none when there is no listing.
 */
async function listedGGUFs(root: string, doFetch: typeof fetch, headers?: Record<string, string>): Promise<string[]> {
  const found: string[] = [];
  try {
    const res = await doFetch(root, { headers });
    if (!res.ok || !/text\/html/i.test(res.headers.get('content-type') ?? '') || !res.body) {
      await res.body?.cancel();
      return found;
    }
    // A listing is small; read at most 1 MiB of it.
    const reader = res.body.getReader();
    const parts: Uint8Array[] = [];
    let n = 0;
    while (n < 1 << 20) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      n += value.length;
    }
    await reader.cancel().catch(() => {});
    const html = new TextDecoder().decode(concatBytes(parts));
    for (const m of html.matchAll(/href\s*=\s*["']([^"'#?]+\.gguf)["']/gi)) {
      const url = new URL(m[1], root).toString();
      if (url.startsWith(root) && !found.includes(url)) found.push(url);
    }
  } catch {
    /* no listing */
  }
  return found;
}


function memoryDir(files: MemoryFiles['files']): Dir {
  const get = (name: string) => (Object.hasOwn(files, name) ? files[name] : undefined);
  return {
    label: '{ files }',
    async list() {
      return Object.keys(files);
    },
    async text(name) {
      const v = get(name);
      if (v === undefined || typeof v === 'string') return v;
      const bytes = ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(v);
      return new TextDecoder().decode(bytes);
    },
    async source(name) {
      const v = get(name);
      if (v === undefined) return undefined;
      if (typeof v === 'string') throw new FormatError(`files[${JSON.stringify(name)}]`, 'is text; weights must be an ArrayBuffer or Uint8Array');
      return bufferSource(v, name);
    },
  };
}

/** A parsed JSON file, ConfigError naming the file when it is not valid JSON. */
function parseConfigJson(text: string | undefined, file: string): any {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, `invalid JSON: ${(e as Error).message}`);
  }
}

interface SideFiles {
  config?: any;
  generationConfig?: any;
  tokenizerJson?: string;
  tokenizerConfig?: any;
  chatTemplate?: string;
}

/** config.json, generation_config.json, tokenizer files and chat template of a directory. */
async function readSideFiles(dir: Dir): Promise<SideFiles> {
  const [cfg, gen, tok, tokCfg, jinja, tmplJson] = await Promise.all(
    ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'chat_template.json'].map((f) => dir.text(f)),
  );
  const config = parseConfigJson(cfg, 'config.json');
  if (config !== undefined && (typeof config !== 'object' || config === null || Array.isArray(config))) {
    throw new ConfigError('config.json', 'is not a JSON object');
  }
  const tokenizerConfig = parseConfigJson(tokCfg, 'tokenizer_config.json');
  let chatTemplate = jinja;
  if (chatTemplate === undefined && tmplJson !== undefined) chatTemplate = templateOf(parseConfigJson(tmplJson, 'chat_template.json')?.chat_template);
  if (chatTemplate === undefined) chatTemplate = templateOf(tokenizerConfig?.chat_template);
  return { config, generationConfig: parseConfigJson(gen, 'generation_config.json'), tokenizerJson: tok, tokenizerConfig, chatTemplate };
}

/** A chat template field: a string, or a list of named templates where "default" is the one used. */
function templateOf(t: unknown): string | undefined {
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const d = t.find((x) => x?.name === 'default') ?? t[0];
    return typeof d?.template === 'string' ? d.template : undefined;
  }
  return undefined;
}

/** Shard names must stay inside the directory. */
function checkShardName(shard: string, field: string): void {
  if (!shard || shard.startsWith('/') || shard.includes('\\') || /^[a-z]+:/i.test(shard) || shard.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new FormatError(field, `shard name ${JSON.stringify(shard)} is not a plain relative file name`, INDEX);
  }
}

async function openSharded(dir: Dir, indexText: string): Promise<{ tensors: Map<string, TensorInfo>; metadata: Record<string, unknown>; sources: ByteSource[] }> {
  let index: any;
  try {
    index = JSON.parse(indexText);
  } catch (e) {
    throw new FormatError('index', `invalid JSON: ${(e as Error).message}`, INDEX);
  }
  const wm = index?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new FormatError('weight_map', 'is missing or not an object', INDEX);
  const byShard = new Map<string, string[]>();
  for (const name of Object.keys(wm)) {
    const shard = wm[name];
    const field = `weight_map[${JSON.stringify(name)}]`;
    if (typeof shard !== 'string') throw new FormatError(field, 'is not a file name', INDEX);
    checkShardName(shard, field);
    if (!byShard.has(shard)) byShard.set(shard, []);
    byShard.get(shard)!.push(name);
  }
  const sources: ByteSource[] = [];
  const tensors = new Map<string, TensorInfo>();
  const shardOf = new Map<string, string>();
  let metadata: Record<string, unknown> = {};
  try {
    for (const [shard, names] of byShard) {
      const src = await dir.source(shard);
      if (!src) throw new FormatError(`weight_map[${JSON.stringify(names[0])}]`, `shard ${JSON.stringify(shard)} not found in ${dir.label}`, INDEX);
      sources.push(src);
      const st = await parseSafetensors(src);
      if (sources.length === 1) metadata = { ...st.metadata };
      for (const t of st.tensors) {
        const other = shardOf.get(t.name);
        if (other !== undefined) throw new FormatError(`tensors[${JSON.stringify(t.name)}]`, `appears in both ${JSON.stringify(other)} and ${JSON.stringify(shard)}`, INDEX);
        shardOf.set(t.name, shard);
        tensors.set(t.name, t);
      }
      for (const name of names) {
        if (shardOf.get(name) !== shard) {
          throw new FormatError(`weight_map[${JSON.stringify(name)}]`, `shard ${JSON.stringify(shard)} has no tensor ${JSON.stringify(name)}`, INDEX);
        }
      }
    }
  } catch (e) {
    for (const s of sources) await s.close?.();
    throw e;
  }
  return { tensors, metadata, sources };
}

function tensorMap(list: TensorInfo[]): Map<string, TensorInfo> {
  return new Map(list.map((t) => [t.name, t]));
}

function requireConfig(config: any, where: string, field = 'config.json'): any {
  if (config === undefined || config === null) throw new ConfigError(field, `not found in ${where}`);
  if (typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError(field, `is not a JSON object (${Array.isArray(config) ? 'an array' : `a ${typeof config}`})`);
  }
  return config;
}

/** Opens a single weights file (safetensors or GGUF, by magic) with side files from `side`. */
async function openFile(src: ByteSource, side: SideFiles, opts: OpenOptions, where: string): Promise<Checkpoint> {
  try {
    const head = await src.read(0, Math.min(src.size, 9));
    if (isGGUF(head) || /\.gguf$/i.test(src.name)) {
      const g = await parseGGUF(src);
      if (isLlamaCppLayout(g)) {
        // llama.cpp's own layout: tensors renamed back to HF, config rebuilt from `<arch>.*` keys.
        const lc = await openLlamaCpp(g, opts.config ?? side.config);
        const metadata: Record<string, unknown> = { ...g.metadata };
        if (lc.unmapped.length) metadata['sparrow.llamacpp.unmapped'] = lc.unmapped;
        return new CheckpointImpl('gguf', lc.config, tensorMap(lc.tensors), metadata, [src],
          side.generationConfig ?? lc.generationConfig,
          side.tokenizerJson ?? lc.tokenizerJson,
          side.tokenizerConfig ?? (side.tokenizerJson === undefined ? lc.tokenizerConfig : undefined),
          side.chatTemplate ?? lc.chatTemplate);
      }
      const meta = readSparrowMetadata(g.metadata, {
        config: (opts.config ?? side.config) !== undefined,
        generationConfig: side.generationConfig !== undefined,
        tokenizerConfig: side.tokenizerConfig !== undefined,
      });
      const own = opts.config ?? side.config;
      const config = own !== undefined
        ? requireConfig(own, where)
        : requireConfig(meta.config, `${where} (nor sparrow.hf_config in the GGUF metadata)`, meta.config === undefined ? 'config.json' : 'gguf.metadata["sparrow.hf_config"]');
      return new CheckpointImpl('gguf', config, tensorMap(g.tensors), g.metadata, [src],
        side.generationConfig ?? meta.generationConfig,
        side.tokenizerJson ?? meta.tokenizerJson,
        side.tokenizerConfig ?? meta.tokenizerConfig,
        side.chatTemplate ?? meta.chatTemplate);
    }
    if (!looksLikeSafetensors(head, src.size) && !/\.safetensors$/i.test(src.name) && src.size >= 9) {
      throw new FormatError('magic', 'neither GGUF nor safetensors', src.name);
    }
    const st = await parseSafetensors(src);
    const config = requireConfig(opts.config ?? side.config, where);
    return new CheckpointImpl('safetensors', config, tensorMap(st.tensors), st.metadata, [src],
      side.generationConfig, side.tokenizerJson, side.tokenizerConfig, side.chatTemplate);
  } catch (e) {
    await src.close?.();
    throw e;
  }
}

async function openDir(dir: Dir, opts: OpenOptions): Promise<Checkpoint> {
  const side = await readSideFiles(dir);
  const indexText = await dir.text(INDEX);
  if (indexText !== undefined) {
    const config = requireConfig(opts.config ?? side.config, dir.label);
    const { tensors, metadata, sources } = await openSharded(dir, indexText);
    return new CheckpointImpl('safetensors', config, tensors, metadata, sources,
      side.generationConfig, side.tokenizerJson, side.tokenizerConfig, side.chatTemplate);
  }
  const names = dir.list ? await dir.list() : undefined;
  // Over HTTP nothing can be listed: model.safetensors is the only name to try.
  let weights = !names || names.includes(SINGLE) ? await dir.source(SINGLE) : undefined;
  if (!weights && names) {
    const pick = (ext: RegExp) => names.filter((n) => ext.test(n)).sort();
    const st = pick(/\.safetensors$/i);
    const gg = pick(/\.gguf$/i);
    if (st.length > 1) throw new FormatError('weights', `several .safetensors files (${st.join(', ')}) and no ${INDEX}`, dir.label);
    if (st.length === 1) weights = await dir.source(st[0]);
    else if (gg.length > 1) throw new FormatError('weights', `several .gguf files (${gg.join(', ')}); open one of them by path`, dir.label);
    else if (gg.length === 1) weights = await dir.source(gg[0]);
  }
  if (!weights) {
    if (!names && dir.missingWeights) throw new FormatError('weights', await dir.missingWeights(side), dir.label);
    throw new FormatError('weights', `no ${SINGLE}, ${INDEX} or .gguf file`, dir.label);
  }
  return openFile(weights, side, opts, dir.label);
}

function isMemoryFiles(x: unknown): x is MemoryFiles {
  return typeof x === 'object' && x !== null && !ArrayBuffer.isView(x) && !isByteSource(x)
    && typeof (x as MemoryFiles).files === 'object' && (x as MemoryFiles).files !== null;
}

/**
 * Opens a checkpoint and validates every header. `src` is:
 * - a directory path: config.json + model.safetensors, or + model.safetensors.index.json and its
 *   shards, or a single *.gguf (config and tokenizer files in the directory win over GGUF metadata;
 *   safetensors win over a GGUF when a directory holds both);
 * - a .gguf or .safetensors file path (a safetensors file takes config.json etc. from its directory);
 * - an http(s) URL of a .gguf / .safetensors file, or of an HF-style directory (config.json, then
 *   model.safetensors.index.json or model.safetensors are fetched from it);
 * - bytes (ArrayBuffer / Uint8Array), GGUF or safetensors by magic (safetensors needs opts.config);
 * - `{ files }`, an in-memory directory;
 * - any ByteSource.
 * Missing or malformed config.json is a ConfigError naming the file; anything wrong in the weights is
 * a FormatError naming the field.
 */
export async function openCheckpoint(src: CheckpointInput, opts: OpenOptions = {}): Promise<Checkpoint> {
  if (isMemoryFiles(src)) return openDir(memoryDir(src.files), opts);
  if (typeof src === 'string' || src instanceof URL) {
    const s = String(src);
    if (isUrl(s)) {
      const url = new URL(s);
      if (/\.(gguf|safetensors)$/i.test(url.pathname)) {
        const source = await urlSource(s, opts);
        const side = /\.safetensors$/i.test(url.pathname) ? await readSideFiles(urlDir(new URL('.', url).toString(), opts)) : {};
        return openFile(source, side, opts, new URL('.', url).toString());
      }
      return openDir(urlDir(s, opts), opts);
    }
    const path = src instanceof URL ? decodeURIComponent(src.pathname) : s;
    const fs = await nodeFs(path);
    let isDir: boolean;
    try {
      isDir = (await fs.stat(path)).isDirectory();
    } catch (e) {
      if (isNotFound(e)) throw new FormatError('path', 'not found', path);
      throw new FormatError('path', `cannot stat: ${(e as Error).message}`, path);
    }
    if (isDir) return openDir(localDir(path), opts);
    const source = await fileSource(path);
    if (/\.gguf$/i.test(path)) return openFile(source, {}, opts, path);
    const parent = path.replace(/[\\/]+[^\\/]*$/, '') || '.';
    const side = parent === path ? {} : await readSideFiles(localDir(parent));
    return openFile(source, side, opts, parent);
  }
  const source = await openSource(src, opts);
  return openFile(source, {}, opts, source.name);
}
