// The one interface a sequence's state offers generation, whatever runs it (the WASM model or the
// WebGPU one): feed tokens, cut back or return to a checkpoint, snapshot, fork. Backends that can
// decode greedily on their device add `greedy`.

import type { SnapshotOptions } from './state';

export interface SequenceSession {
  /** Token ids whose state the session holds. */
  readonly tokens: readonly number[];
  readonly pos: number;
  /** Tokens per forward call that suit this backend in prefill. */
  readonly prefillChunk: number;
  /** Feeds tokens; the last token's logits ([V]). */
  forward(ids: ArrayLike<number>): Float32Array | Promise<Float32Array>;
  /**
   * Feeds tokens as forward() does; returns every one's final hidden states (after the final norm,
   * before the LM head: [T·hidden], row by row) instead of logits. Throws where the net has no such
   * output (Net.hiddenOutput).
   */
  hidden(ids: ArrayLike<number>): Float32Array | Promise<Float32Array>;
  /** Whether rewind(pos) can cut the state back to `pos` tokens (position-indexed caches only). */
  canRewind(pos: number): boolean;
  rewind(pos: number): void;
  /** Keeps the current state to come back to (recurrent state cannot be cut back by position). */
  markCheckpoint(): void;
  /** Position of the kept checkpoint, or null. */
  readonly checkpointPos: number | null;
  restoreCheckpoint(): void;
  /** The state as versioned, checksummed snapshot bytes (restorable on any backend). */
  snapshotAsync(opts?: SnapshotOptions): Promise<Uint8Array>;
  /** The same, synchronously, where the state is in host memory. */
  snapshotSync?(opts?: SnapshotOptions): Uint8Array;
  reset(): void;
  /** An independent copy of the state. */
  fork(): SequenceSession;
  dispose(): void;
  /**
   * Greedy decoding on the device: feeds `first`, then each chosen token, n steps; yields the chosen
   * tokens in batches of up to maxBatch. Leaving early waits for the batches still in flight.
   */
  greedy?(first: number, n: number, maxBatch: number): AsyncGenerator<number[]>;
}

/** Where sessions come from: a loaded model on one backend. */
export interface SessionFactory {
  newSession(): SequenceSession;
  /** A session resumed from snapshot bytes taken on any backend. */
  restore(bytes: Uint8Array): SequenceSession;
}
