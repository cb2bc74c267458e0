// Text out of a token stream: incremental detokenization that never splits a character, and
// stop strings that are cut from the output (with text held back while it could still begin one).

import type { Tokenizer } from './tokenizer';

/** How many prompt tokens seed the decode window: decoders that drop a leading space on the first
 * token (SentencePiece "▁x", Metaspace) then see the generated tokens in context. */
const CONTEXT_TOKENS = 4;

/**
 * Decodes a growing id list into text deltas. It decodes a short window of ids ending at the newest
 * one and emits what the window adds over its already-emitted part, once the result no longer ends
 * in U+FFFD (a byte-level or byte-fallback token in the middle of a UTF-8 sequence).
 */
export class TextStream {
  private ids: number[];
  /** Window start. */
  private prefix = 0;
  /** Ids before this were emitted. */
  private read: number;

  constructor(private readonly tok: Tokenizer, context: ArrayLike<number> = [], private readonly skipSpecial = true) {
    this.ids = Array.from(context).slice(-CONTEXT_TOKENS);
    this.read = this.ids.length;
  }

  private delta(final: boolean): string {
    const done = this.tok.decode(this.ids.slice(this.prefix, this.read), { skipSpecialTokens: this.skipSpecial });
    const all = this.tok.decode(this.ids.slice(this.prefix), { skipSpecialTokens: this.skipSpecial });
    if (!final && (all.length <= done.length || all.endsWith('\uFFFD'))) return '';
    const out = all.startsWith(done) ? all.slice(done.length) : all.slice(commonPrefix(all, done));
    this.prefix = this.read;
    this.read = this.ids.length;
    return out;
  }

  /** Adds one token; returns the text it completes ('' while a character is still incomplete). */
  push(id: number): string {
    this.ids.push(id);
    return this.delta(false);
  }

  /**
   * Whatever is still pending. When the stream ended inside a character, that unfinished character
   * decodes to one U+FFFD at the end: it is left out with `dropIncomplete` (generation cut short by a
   * token limit), kept otherwise.
   */
  flush(dropIncomplete = false): string {
    if (this.read >= this.ids.length) return '';
    const held = this.tok.decode(this.ids.slice(this.prefix), { skipSpecialTokens: this.skipSpecial }).endsWith('\uFFFD');
    const out = this.delta(true);
    return dropIncomplete && held && out.endsWith('\uFFFD') ? out.slice(0, -1) : out;
  }
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/**
 * Stop strings over streamed text: `push` returns the text safe to emit now, holding back any tail
 * that is a proper prefix of a stop string, and reports a stop when one appears (its text and
 * everything after it are dropped).
 */
export class StopStrings {
  private pending = '';
  private readonly stops: string[];
  stopped: string | null = null;

  constructor(stops: string[] = []) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  push(text: string): string {
    if (this.stopped !== null) return '';
    if (!this.stops.length) return text;
    this.pending += text;
    let at = -1, hit: string | null = null;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        hit = s;
      }
    }
    if (hit !== null) {
      const out = this.pending.slice(0, at);
      this.pending = '';
      this.stopped = hit;
      return out;
    }
    const hold = this.heldLength();
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return out;
  }

  /** Length of the longest tail of `pending` that a stop string starts with. */
  private heldLength(): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > best; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }

  /** The held-back text, at the end of a generation that did not stop on a string. */
  flush(): string {
    const out = this.stopped === null ? this.pending : '';
    this.pending = '';
    return out;
  }
}
