// The chat page (GET /) and the files its in-browser mode loads: the bundled library, the kernel
// builds and the model file. Mounted at /.

import { Hono, type Context } from 'hono';
import type { AppOptions } from '../app';
import { ApiError } from '../openai';
import { chatPage } from '../page';
import type { AppEnv } from '../state';

export const BROWSER_BUNDLE_PATH = '/browser/sparrow.js';

export function pageRoutes(opts: AppOptions): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  if (opts.page === false) return routes;
  const browser = opts.browser;
  routes.get('/', (c) => c.html(chatPage(opts.modelId, browser ? { bundle: BROWSER_BUNDLE_PATH, model: browser.modelPath } : undefined)));
  if (browser) {
    const file = async (c: Context<AppEnv>) => {
      const res = await browser.get(c.req.path, c.req.raw);
      if (!res) throw new ApiError(404, `${c.req.path} is not available on this server`, 'invalid_request_error', null, 'unknown_url');
      return res;
    };
    for (const p of [BROWSER_BUNDLE_PATH, '/build/simd.wasm', '/build/relaxed.wasm', browser.modelPath]) routes.get(p, file);
  }
  return routes;
}
