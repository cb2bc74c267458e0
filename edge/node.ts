// Node adapter (through tsx: `node --import tsx edge/node.ts [--port N]`): @hono/node-server.
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { setup, started } from './local';

export async function serveNode(args: string[]) {
  const { cfg, app } = await setup(args);
  const server = serve({ fetch: app.fetch, hostname: cfg.host, port: cfg.port }, (info) => started(cfg, app, info.port)) as Server;
  // --idle-timeout: how long a kept-alive connection waits for its next request (0: for ever).
  server.keepAliveTimeout = cfg.idleTimeout * 1000;
  return server;
}

if (process.argv[1] && fileURLToPath(import.meta.url).replace(/\.ts$/, '') === process.argv[1].replace(/\.ts$/, '')) void serveNode(process.argv.slice(2));
