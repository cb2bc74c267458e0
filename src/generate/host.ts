// Handing the thread back to the host between steps of long work (a server keeps answering, and an
// abort can land between steps).

const setImmediateFn: ((cb: () => void) => unknown) | undefined = (globalThis as { setImmediate?: (cb: () => void) => unknown }).setImmediate;

/** A macrotask turn. */
export function yieldToHost(): Promise<void> {
  return new Promise((r) => (setImmediateFn ? setImmediateFn(r) : setTimeout(r, 0)));
}
