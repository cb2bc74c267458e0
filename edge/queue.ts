// Admission control for generations: at most `maxRunning` run at once (they interleave token by
// token on one thread), at most `maxWaiting` wait in line, and anything beyond is refused at once
// so that the client can retry (HTTP 429 with Retry-After) instead of piling up.

export class QueueFullError extends Error {
  constructor(readonly running: number, readonly waiting: number, readonly retryAfterS: number) {
    super(`server is busy: ${running} generations running and ${waiting} waiting`);
    this.name = 'QueueFullError';
  }
}

export class QueueAbortError extends Error {
  constructor() {
    super('the request was cancelled while it waited');
    this.name = 'QueueAbortError';
  }
}

interface Waiter {
  resolve(release: () => void): void;
  reject(e: Error): void;
}

export class GenerationQueue {
  private active = 0;
  private readonly line: Waiter[] = [];
  /** Moving average of how long a generation holds its place, for Retry-After. */
  private avgMs = 1000;

  constructor(readonly maxRunning: number, readonly maxWaiting: number) {
    if (!Number.isInteger(maxRunning) || maxRunning < 1) throw new RangeError(`maxConcurrent must be an integer ≥ 1, got ${maxRunning}`);
    if (!Number.isInteger(maxWaiting) || maxWaiting < 0) throw new RangeError(`maxQueue must be an integer ≥ 0, got ${maxWaiting}`);
  }

  get running(): number {
    return this.active;
  }

  get waiting(): number {
    return this.line.length;
  }

  /** Seconds after which a place is likely to be free. */
  retryAfter(): number {
    return Math.max(1, Math.ceil(((this.line.length + 1) * this.avgMs) / this.maxRunning / 1000));
  }

  /**
   * Resolves with a release function once a place is free; QueueFullError when the line is full,
   * QueueAbortError when `signal` fires while waiting. Call the release exactly once (extra calls
   * are ignored).
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(new QueueAbortError());
    if (this.active < this.maxRunning) return Promise.resolve(this.grant());
    if (this.line.length >= this.maxWaiting) return Promise.reject(new QueueFullError(this.active, this.line.length, this.retryAfter()));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve: (r) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(r);
        },
        reject,
      };
      const onAbort = () => {
        const i = this.line.indexOf(w);
        if (i >= 0) this.line.splice(i, 1);
        reject(new QueueAbortError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.line.push(w);
    });
  }

  private grant(): () => void {
    this.active++;
    const t0 = Date.now();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.avgMs = this.avgMs * 0.8 + (Date.now() - t0) * 0.2;
      this.active--;
      const next = this.line.shift();
      if (next) next.resolve(this.grant());
    };
  }
}
