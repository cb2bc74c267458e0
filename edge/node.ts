// Node adapter (through tsx: `node --import tsx edge/node.ts [--port N]`): @hono/node-server.
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { setup, started } from './local';

export function serveNode(args: string[]) {
  const { cfg, app } = setup(args);
  return serve({ fetch: app.fetch, hostname: cfg.host, port: cfg.port }, (info) => started(cfg, app, info.port));
}

if (process.argv[1] && fileURLToPath(import.meta.url).replace(/\.ts$/, '') === process.argv[1].replace(/\.ts$/, '')) serveNode(process.argv.slice(2));
