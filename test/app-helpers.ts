// The edge app in-process for tests (app.request, no sockets): an app of a loaded model with
// test defaults, JSON posts, the events of a streamed reply, and a model whose net lacks the
// hidden-state output.

import { expect } from 'vitest';
import { createApp, type AppOptions, type SparrowApp } from '../edge/app';
import { MemorySessionStore } from '../edge/store';
import { LanguageModel } from '../src/index';
import type { Model } from '../src/models/model';
import type { Net } from '../src/models/net';

/** An app serving `model()` as sparrow-mini: 2 running, 2 waiting, 64 KiB bodies, memory sessions, no log. */
export function testApp(model: () => LanguageModel, o: Partial<AppOptions> = {}): SparrowApp {
  return createApp({
    loadModel: async () => model(),
    modelId: 'sparrow-mini',
    store: new MemorySessionStore(),
    maxConcurrent: 2,
    maxQueue: 2,
    maxBodyBytes: 64 * 1024,
    log: () => {},
    ...o,
  });
}

/** POSTs `body` (JSON, or a string sent as it is) to `path`. */
export function post(app: SparrowApp, path: string, body: unknown, headers: Record<string, string> = {}) {
  return app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

/** The parsed events of a streamed reply, which must be `data:` events ending in [DONE]. */
export async function sse(res: Response): Promise<any[]> {
  const text = await res.text();
  const events = text.split('\n\n').filter(Boolean);
  expect(events[events.length - 1]).toBe('data: [DONE]');
  return events.slice(0, -1).map((e) => {
    expect(e.startsWith('data: ')).toBe(true);
    return JSON.parse(e.slice(6));
  });
}

/**
 * `lm` with a net that has no hidden-state output (as a family with a forward of its own that ends
 * in logits), named 'logits_only'.
 */
export function logitsOnly(lm: LanguageModel, chatTemplate = lm.chatTemplate): LanguageModel {
  const net = lm.model.net;
  const withoutHidden: Net = {
    vocabSize: net.vocabSize, hidden: net.hidden, layerKinds: net.layerKinds, hiddenOutput: false,
    specs: (n) => net.specs(n),
    forward: (g, all) => net.forward(g, all),
  };
  const model = Object.create(lm.model, { net: { value: withoutHidden }, modelType: { value: 'logits_only' } }) as Model;
  return new LanguageModel(model, lm.tokenizer, chatTemplate);
}
