// Bun adapter (`bun edge/bun.ts [--port N]`): Bun.serve.
/// <reference types="bun" />
import { setup, started } from './local';

export function serveBun(args: string[]) {
  const { cfg, app } = setup(args);
  // Long non-streamed generations send nothing for a while: no idle cut-off.
  const server = Bun.serve({ hostname: cfg.host, port: cfg.port, fetch: app.fetch, idleTimeout: 0 });
  started(cfg, app, server.port!);
  return server;
}

if (import.meta.main) serveBun(Bun.argv.slice(2));
