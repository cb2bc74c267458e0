// The OpenAI generation endpoints: POST /v1/completions and POST /v1/chat/completions. Mounted at /v1.

import { Hono } from 'hono';
import { readJson } from '../body';
import { generate } from '../generate';
import { parseChatRequest, parseCompletionRequest } from '../openai';
import type { AppEnv, AppState } from '../state';

export function generationRoutes(state: AppState): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.post('/completions', async (c) => {
    state.generationRequests++;
    return generate(state, c, parseCompletionRequest(await readJson(c.req.raw, state.opts.maxBodyBytes)));
  });
  routes.post('/chat/completions', async (c) => {
    state.generationRequests++;
    return generate(state, c, parseChatRequest(await readJson(c.req.raw, state.opts.maxBodyBytes)));
  });
  return routes;
}
