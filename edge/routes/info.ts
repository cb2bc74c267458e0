// What the server serves and how it is doing: GET /healthz, and the OpenAI model list
// (GET /v1/models, GET /v1/models/:id). Mounted at /.

import { Hono } from 'hono';
import { formatAttention } from '../../src/runtime/attention-mode';
import { ApiError } from '../openai';
import type { AppEnv, AppState } from '../state';

export function infoRoutes(state: AppState): Hono<AppEnv> {
  const { opts, queue, model } = state;
  const routes = new Hono<AppEnv>();

  // 200 once the model is loaded; 503 before, saying whether it is still loading or why it failed.
  routes.get('/healthz', (c) => {
    const lm = model.served?.lm;
    const failure = model.failure;
    const status = lm ? 'ok' : failure ? 'unavailable' : 'loading';
    const body: Record<string, unknown> = {
      status,
      model: opts.modelId,
      loaded: !!lm,
      runtime: opts.runtime ?? null,
      queue: { running: queue.running, waiting: queue.waiting, max_running: queue.maxRunning, max_waiting: queue.maxWaiting },
      generation_requests: state.generationRequests,
    };
    if (failure && !lm) body.error = failure.body().error;
    else if (!lm) body.error = { message: 'the model is loading', type: 'server_error', param: null, code: 'model_loading' };
    if (lm) {
      const s = lm.status();
      body.build = s.build;
      body.memory = { wasm_bytes: s.wasmBytes, arena_bytes: s.arenaBytes, arena_peak_bytes: s.arenaPeakBytes };
      // Sessions of requests; the prompt cache's (which hold state slots on the wasm backend) apart.
      const cached = state.promptCache.size;
      body.sessions_in_use = Math.max(0, s.sessionsInUse - (lm.backend === 'wasm' ? cached : 0));
      body.prompt_cache = { sessions: cached, max_sessions: state.promptCache.capacity };
      body.max_context = s.maxContext;
      body.kv_cache = lm.model.kvCache;
      body.attention = formatAttention(lm.model.attention);
    }
    return c.json(body, lm ? 200 : 503);
  });

  const modelObject = () => ({ id: opts.modelId, object: 'model', created: state.created, owned_by: 'sparrow' });
  routes.get('/v1/models', (c) => c.json({ object: 'list', data: [modelObject()] }));
  routes.get('/v1/models/:id{.+}', (c) => {
    if (c.req.param('id') !== opts.modelId) throw new ApiError(404, `the model '${c.req.param('id')}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    return c.json(modelObject());
  });

  return routes;
}
