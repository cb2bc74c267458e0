// Bun adapter (`bun edge/bun.ts [--port N]`): Bun.serve.
/// <reference types="bun" />
import { setup, started } from './local';

export async function serveBun(args: string[]) {
  const { cfg, app } = await setup(args);
  const server = Bun.serve({
    hostname: cfg.host,
    port: cfg.port,
    // --idle-timeout: a connection that sends and receives nothing for this long is closed (0: never).
    idleTimeout: cfg.idleTimeout,
    fetch(req, srv) {
      // A generation request can be silent for long (waiting in the queue, or a long non-streamed
      // generation): it is bounded by --request-timeout instead.
      if (req.method === 'POST') srv.timeout(req, 0);
      return app.fetch(req, srv);
    },
  });
  started(cfg, app, server.port!);
  return server;
}

if (import.meta.main) void serveBun(Bun.argv.slice(2));
