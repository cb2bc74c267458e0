// The automatic prompt cache: sessions of finished requests kept in memory, so that a later request
// whose prompt begins with the same tokens (the next turn of a chat, a shared system prompt) runs only
// the rest. Attention caches are cut back to the common prefix; recurrent state returns to the
// checkpoint taken at the end of the earlier prompt (see ModelSession.reuse). Entries belong to the
// API key of the request that made them and are only reused for that key.

import type { ModelSession } from '../src/index';
import { SlotsBusyError } from '../src/index';

interface Entry {
  owner: string;
  session: ModelSession;
}

export class PromptCache {
  /** Least recently used first. */
  private entries: Entry[] = [];

  /** `capacity` sessions at most (0: no cache). */
  constructor(readonly capacity: number) {}

  get size(): number {
    return this.entries.length;
  }

  /**
   * Takes out the cached session of `owner` that keeps the longest prefix of `ids` (at least one
   * token), or null. The caller owns it until it gives it back with put() or disposes it.
   */
  take(owner: string, ids: readonly number[]): ModelSession | null {
    let best = -1;
    let bestKeep = 0;
    this.entries.forEach((e, i) => {
      if (e.owner !== owner) return;
      const keep = e.session.usablePrefix(ids);
      if (keep > bestKeep) {
        best = i;
        bestKeep = keep;
      }
    });
    if (best < 0) return null;
    return this.entries.splice(best, 1)[0].session;
  }

  /** Keeps a session whose generation ended (most recently used); the oldest go beyond capacity. */
  put(owner: string, session: ModelSession): void {
    if (this.capacity <= 0) {
      session.dispose();
      return;
    }
    this.entries.push({ owner, session });
    while (this.entries.length > this.capacity) this.entries.shift()!.session.dispose();
  }

  /** Frees the least recently used entry; false when there is none. */
  evictOne(): boolean {
    const e = this.entries.shift();
    if (!e) return false;
    e.session.dispose();
    return true;
  }

  clear(): void {
    while (this.evictOne());
  }

  /**
   * Runs `open` (which takes a state slot: a new or restored session). Cached sessions hold slots:
   * when every slot is taken, the least recently used entries are freed until one is available.
   */
  withSlot<T>(open: () => T): T {
    for (;;) {
      try {
        return open();
      } catch (e) {
        if (!(e instanceof SlotsBusyError) || !this.evictOne()) throw e;
      }
    }
  }
}
