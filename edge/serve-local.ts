// `sparrow serve`: the local server on whichever runtime runs the CLI (Bun, Deno or Node).
export async function main(args: string[]): Promise<void> {
  const g = globalThis as any;
  if (g.Bun) await (await import('./bun')).serveBun(args);
  else if (g.Deno) await (await import('./deno')).serveDeno(args);
  else await (await import('./node')).serveNode(args);
}
