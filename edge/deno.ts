// Deno adapter: `deno run --allow-read --allow-net=127.0.0.1 --allow-env edge/deno.ts [--port N]`
// (deno.json turns on sloppy imports: the project's imports carry no file extensions), plus
// --allow-write for --session-dir. Deno.serve has no idle-timeout setting, so --idle-timeout does
// not apply here.
import { setup, started } from './local';

declare const Deno: any;

export async function serveDeno(args: string[]) {
  const { cfg, app } = await setup(args);
  return Deno.serve({ hostname: cfg.host, port: cfg.port, onListen: ({ port }: { port: number }) => started(cfg, app, port) }, app.fetch);
}

if ((import.meta as any).main) void serveDeno(Deno.args);
