// Loading of the kernel modules, build selection, and the per-model memory arena.
//
// One WebAssembly.Memory per model instance: the host lays out weights, activations and state in it
// with a bump allocator (Arena). Kernels are pure functions over byte offsets into that memory.
// memory.grow detaches typed-array views of a non-shared memory, so views are taken through
// Arena.f32()/Buf.v, which re-create them when the buffer changed.

export type BuildName = 'simd' | 'relaxed' | 'threads';
export type BuildChoice = 'auto' | BuildName;

export class KernelError extends Error {
  readonly code = 'KERNEL';
  constructor(readonly kernel: string, message: string) {
    super(`${kernel}: ${message}`);
    this.name = 'KernelError';
  }
}

/** An arena allocation past the memory budget: `need` is the arena's end after it, in bytes. */
export class ArenaBudgetError extends KernelError {
  constructor(readonly bytes: number, readonly need: number, readonly budget: number) {
    super('arena', `allocation of ${bytes} bytes exceeds the memory budget (${need} > ${budget})`);
    this.name = 'ArenaBudgetError';
  }
}

/** Compiled modules, cached per process; keyed by build name. */
const compiled = new Map<BuildName, WebAssembly.Module>();
/** Modules handed in by the host (Workers import them precompiled). */
export function provideModule(build: BuildName, mod: WebAssembly.Module): void {
  compiled.set(build, mod);
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node && !(process.versions as any).bun && typeof (globalThis as any).Deno === 'undefined';

async function readBuild(build: BuildName): Promise<Uint8Array | null> {
  const url = new URL(`../../build/${build}.wasm`, import.meta.url);
  if (url.protocol === 'file:') {
    try {
      const fs = await import('node:fs/promises');
      const { fileURLToPath } = await import('node:url');
      return new Uint8Array(await fs.readFile(fileURLToPath(url)));
    } catch {
      return null;
    }
  }
  try {
    const res = await fetch(url);
    return res.ok ? new Uint8Array(await res.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

let nodeFlagsTried = false;
/**
 * Node 20 (V8 11.3) ships relaxed SIMD behind a flag, and its baseline compiler miscompiles the
 * relaxed int8 dot. Setting both flags at run time (NODE_OPTIONS refuses them) enables the
 * relaxed build with the optimizing compiler only; the probe in instantiate() still checks it.
 */
async function enableNodeRelaxed(): Promise<void> {
  if (nodeFlagsTried || !isNode) return;
  nodeFlagsTried = true;
  try {
    const v8 = await import('node:v8');
    v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    v8.setFlagsFromString('--no-liftoff');
  } catch {
    /* not Node, or flags locked: the baseline build is used */
  }
}

async function compile(build: BuildName): Promise<WebAssembly.Module | null> {
  const hit = compiled.get(build);
  if (hit) return hit;
  const bytes = await readBuild(build);
  if (!bytes) return null;
  if (build === 'relaxed' && !WebAssembly.validate(bytes)) {
    await enableNodeRelaxed();
    if (!WebAssembly.validate(bytes)) return null;
  }
  if (!WebAssembly.validate(bytes)) return null;
  const mod = await WebAssembly.compile(bytes);
  compiled.set(build, mod);
  return mod;
}

export function threadsAvailable(): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && typeof Atomics !== 'undefined' &&
    (isNode || typeof (globalThis as any).Worker !== 'undefined' || !!(process as any)?.versions?.bun);
}

export interface KernelExports {
  heapBase(): number;
  buildFeatures(): number;
  relaxedDotProbe(a: number, b: number): number;
  [name: string]: any;
}

/** A buffer in the arena; `.v` is a live Float32Array view. */
export class Buf {
  private view: Float32Array;
  constructor(private readonly arena: Arena, readonly ptr: number, readonly n: number) {
    this.view = new Float32Array(arena.memory.buffer, ptr, n);
  }
  get v(): Float32Array {
    if (this.view.buffer !== this.arena.memory.buffer) this.view = new Float32Array(this.arena.memory.buffer, this.ptr, this.n);
    return this.view;
  }
  get bytes(): number {
    return this.n * 4;
  }
}

export class Arena {
  top: number;
  /** High-water mark, for reporting peak use. */
  peak: number;
  /**
   * The memory's byte length as of the arena's last growth (memory grows only through alloc), read
   * by the argument checks of every kernel call without going through memory.buffer.
   */
  size: number;
  constructor(readonly memory: WebAssembly.Memory, readonly base: number, readonly budget = Infinity) {
    this.top = base;
    this.peak = base;
    this.size = memory.buffer.byteLength;
  }
  /** Reserves `bytes` (aligned) and grows memory when needed. Only call at load/session setup. */
  alloc(bytes: number, align = 64): number {
    if (!Number.isFinite(bytes) || bytes < 0) throw new KernelError('arena', `bad allocation size ${bytes}`);
    const p = Math.ceil(this.top / align) * align;
    const end = p + bytes;
    if (end > this.budget) {
      throw new ArenaBudgetError(bytes, end, this.budget);
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / 65536);
      try {
        this.memory.grow(pages);
      } catch (e) {
        throw new KernelError('arena', `cannot grow memory to ${end} bytes: ${(e as Error).message}`);
      }
      this.size = this.memory.buffer.byteLength;
    }
    this.top = end;
    if (end > this.peak) this.peak = end;
    return p;
  }
  f32buf(n: number): Buf {
    return new Buf(this, this.alloc(n * 4), n);
  }
  mark(): number {
    return this.top;
  }
  release(mark: number): void {
    if (mark < this.base || mark > this.top) throw new KernelError('arena', `bad release mark ${mark}`);
    this.top = mark;
  }
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }
  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }
  u8(ptr: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }
  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }
  /** Copies host bytes into the arena and returns their offset. */
  put(bytes: Uint8Array, align = 64): number {
    const p = this.alloc(bytes.byteLength, align);
    this.u8(p, bytes.byteLength).set(bytes);
    return p;
  }
  putF32(data: Float32Array): Buf {
    const b = this.f32buf(data.length);
    b.v.set(data);
    return b;
  }
}

export interface InstanceOptions {
  build?: BuildChoice;
  /** Memory budget in bytes for this arena (checked by the host: local workerd enforces none). */
  budget?: number;
  /** Provide a shared memory (threads build). */
  memory?: WebAssembly.Memory;
}

export interface WasmInstance {
  build: BuildName;
  /** The compiled module, so a worker pool can instantiate it over the same shared memory. */
  module: WebAssembly.Module;
  exports: KernelExports;
  memory: WebAssembly.Memory;
  arena: Arena;
}

function envBuild(): BuildChoice | undefined {
  const g = globalThis as any;
  const v = g.process?.env?.SPARROW_WASM ?? g.Deno?.env?.get?.('SPARROW_WASM');
  return v === 'simd' || v === 'relaxed' || v === 'threads' || v === 'auto' ? v : undefined;
}

function probeRelaxed(ex: KernelExports, memory: WebAssembly.Memory, base: number): boolean {
  const a = new Int8Array(memory.buffer, base, 48);
  const b = new Int8Array(memory.buffer, base + 48, 48);
  let exact = 0;
  for (let i = 0; i < 48; i++) {
    a[i] = ((i * 37) % 255) - 127;
    b[i] = (i * 53) % 128;
    exact += a[i] * b[i];
  }
  return ex.relaxedDotProbe(base, base + 48) === exact;
}

/**
 * Instantiates the kernels with a fresh memory. 'auto' picks relaxed when it validates and passes
 * the probe, else baseline SIMD. SPARROW_WASM=simd|relaxed|threads forces a build.
 */
export async function instantiate(opts: InstanceOptions = {}): Promise<WasmInstance> {
  const choice = opts.build && opts.build !== 'auto' ? opts.build : envBuild() ?? opts.build ?? 'auto';
  const order: BuildName[] = choice === 'auto' ? ['relaxed', 'simd'] : [choice];
  for (const build of order) {
    const mod = await compile(build);
    if (!mod) {
      if (choice !== 'auto') throw new KernelError('runtime', `the ${build} kernel build is not available on this runtime`);
      continue;
    }
    const memory = opts.memory ??
      (build === 'threads'
        ? new WebAssembly.Memory({ initial: 32, maximum: 65536, shared: true })
        : new WebAssembly.Memory({ initial: 32 }));
    const instance = await WebAssembly.instantiate(mod, { env: { memory, abort() { throw new KernelError('wasm', 'abort'); } } });
    const ex = instance.exports as unknown as KernelExports;
    const base = ex.heapBase();
    if (build === 'relaxed' && !probeRelaxed(ex, memory, base)) {
      if (choice !== 'auto') throw new KernelError('runtime', 'relaxed SIMD gives wrong int8 dot products on this engine');
      continue;
    }
    return { build, module: mod, exports: ex, memory, arena: new Arena(memory, base, opts.budget) };
  }
  throw new KernelError('runtime', 'no kernel build could be instantiated (WebAssembly SIMD is required)');
}
