// A completion or chat completion, from parsed request to response: the prompt's tokens and every
// check the library would make, a place in the generation queue, the session it resumes, and the
// reply, whole (JSON) or streamed token by token (server-sent events). Cancellation (the client going
// away, the request timeout) gives back the queue place, the session and its state slot at once.

import type { Context } from 'hono';
import {
  ContextLengthError, SnapshotError, resolveSampling,
  type ChatMessage, type GeneratedToken, type Generation, type LanguageModel, type ModelSession,
} from '../src/index';
import { internalError, json, errorResponse, toApiError } from './errors';
import { ApiError, badRequest, randomId, type ParsedRequest } from './openai';
import { QueueAbortError } from './queue';
import { ownedSession, requestSessionId } from './routes/sessions';
import { SSE_HEADERS, executionCtx, streamBody } from './sse';
import { ownerOf, type AppEnv, type AppState, type Log } from './state';
import type { StoredSession } from './store';

/** Answers one parsed generation request; its errors are thrown for the app's error handler. */
export async function generate(state: AppState, c: Context<AppEnv>, r: ParsedRequest): Promise<Response> {
  const { opts, queue, busySessions, log } = state;
  if (state.closed) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
  if (r.model !== undefined && r.model !== opts.modelId) {
    // As OpenAI answers a model it does not have: 404 model_not_found.
    throw new ApiError(404, `the model '${r.model}' does not exist; this server serves '${opts.modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
  }
  const sid = requestSessionId(c, r);
  const owner = ownerOf(c);
  if (sid !== undefined) await ownedSession(state, c, sid, 'session');
  const m = await state.model.get();
  const lm = m.lm;

  // Prompt tokens, and every check the library would make, before taking a place in the queue.
  // Text is encoded in steps that yield, and no further than the context: a prompt that cannot fit
  // is refused as soon as that is certain (by its byte count alone when it is far too long).
  let ids: number[];
  let echoText = '';
  const limit = lm.maxContext - 1;
  const tooLong = (e: unknown, param: string): never => {
    if (e instanceof ContextLengthError) {
      throw badRequest(`the prompt has at least ${e.atLeast} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, param, 'context_length_exceeded');
    }
    throw e;
  };
  const reqAbort = c.req.raw.signal;
  try {
    if (r.kind === 'chat') {
      if (!lm.chatTemplate) throw badRequest('this model has no chat template; use /v1/completions', 'messages', 'unsupported_model');
      ids = await lm.encodeChatAsync(r.messages as ChatMessage[], { limit, signal: reqAbort }).catch((e) => tooLong(e, 'messages'));
      r.params.stopTokenIds = m.chatStopIds;
    } else if (typeof r.prompt === 'string') {
      if (r.prompt === '') throw badRequest(`'prompt' is empty`, 'prompt', 'invalid_value');
      ids = await lm.encodeAsync(r.prompt, { limit, signal: reqAbort }).catch((e) => tooLong(e, 'prompt'));
      echoText = r.echo ? r.prompt : '';
    } else {
      ids = r.prompt as number[];
      if (r.echo) echoText = lm.tokenizer ? lm.decode(ids) : '';
    }
  } catch (e) {
    if (reqAbort?.aborted) return new Response(null, { status: 499 });
    throw e;
  }
  const V = lm.vocabSize;
  if (!ids.length) throw badRequest(`the prompt encodes to no tokens`, r.kind === 'chat' ? 'messages' : 'prompt', 'invalid_value');
  const bad = ids.find((id) => id >= V);
  if (bad !== undefined) throw badRequest(`token id ${bad} is outside the vocabulary [0, ${V})`, 'prompt', 'invalid_value');
  if (ids.length >= lm.maxContext) {
    throw badRequest(`the prompt has ${ids.length} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, r.kind === 'chat' ? 'messages' : 'prompt', 'context_length_exceeded');
  }
  for (const k of Object.keys(r.params.logitBias ?? {})) {
    if (Number(k) >= V) throw badRequest(`'logit_bias' token id ${k} is outside the vocabulary [0, ${V})`, 'logit_bias', 'invalid_value');
  }
  resolveSampling({ ...r.params, seed: r.params.seed ?? 0 });

  if (sid !== undefined && busySessions.has(sid)) {
    throw new ApiError(409, `session '${sid}' is already generating`, 'invalid_request_error', 'session', 'session_busy');
  }
  if (sid !== undefined) busySessions.add(sid);

  // Cancelled by the client going away (request signal, or the streamed body failing or being
  // cancelled). Everything the request holds is given back the moment that happens, not when the
  // generation next looks at the signal: on Workers a request whose client left runs no more timers
  // unless something keeps it alive, so a generation waiting between tokens could otherwise keep its
  // place and its slot for good. A generation that does resume sees the aborted signal before it
  // touches its session again.
  const ac = new AbortController();
  const reqSignal = c.req.raw.signal;
  const onReqAbort = () => ac.abort();
  reqSignal?.addEventListener?.('abort', onReqAbort, { once: true });
  if (reqSignal?.aborted) ac.abort();

  // The request timeout aborts the generation as a client going away would, so it gives back the
  // same things at once; the client then gets a 504 (or, streamed, an error event).
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopTimer = () => clearTimeout(timer);
  if (opts.requestTimeoutMs && opts.requestTimeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, opts.requestTimeoutMs);
  }
  const timeoutError = () => new ApiError(504, `the request took longer than ${opts.requestTimeoutMs! / 1000} s (the server's request timeout)`,
    'server_error', null, 'request_timeout');

  let release: (() => void) | null = null;
  let ms: ModelSession | null = null;
  let prev: StoredSession | null = null;
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    stopTimer();
    reqSignal?.removeEventListener?.('abort', onReqAbort);
    ms?.dispose();
    ms = null;
    if (sid !== undefined) busySessions.delete(sid);
    release?.();
    release = null;
  };
  ac.signal.addEventListener('abort', cleanup, { once: true });
  const gone = () => {
    if (timedOut) {
      if (c.get('note') === undefined) c.set('note', 'timeout');
      return errorResponse(timeoutError());
    }
    return new Response(null, { status: 499 });
  };

  let gen: Generation;
  try {
    release = await queue.acquire(ac.signal);
    if (cleaned) {
      release();
      return gone();
    }
    if (sid !== undefined) {
      prev = await opts.store.get(sid);
      if (cleaned) return gone();
      if (prev && (prev.owner ?? '') !== owner) throw new ApiError(404, `no session '${sid}'`, 'invalid_request_error', 'session', 'session_not_found');
      ms = resume(lm, prev, ids, opts.modelId, log);
    }
    ms ??= lm.session();
    gen = lm.generate(ids, { ...r.params, session: ms, signal: ac.signal });
  } catch (e) {
    cleanup();
    if (e instanceof QueueAbortError) return gone();
    throw e;
  }

  const id = randomId(r.kind === 'chat' ? 'chatcmpl' : 'cmpl');
  const createdAt = Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = sid !== undefined ? { 'x-session-id': sid } : {};

  /** After a finished generation: the state covers every generated token, then it is stored. */
  const save = async () => {
    if (sid === undefined || !ms || gen.finishReason === 'abort' || gen.finishReason === null) return;
    const last = gen.tokens[gen.tokens.length - 1];
    // The last token was sampled but not fed. An end-of-turn token is part of the next chat prompt,
    // so it is fed; EOS never is.
    if (last !== undefined && !lm.eosTokenIds.has(last) && ms.pos < lm.maxContext) {
      await ms.feed([last]);
    }
    const now = Date.now();
    try {
      await opts.store.put({ id: sid, model: opts.modelId, tokens: [...ms.tokens], bytes: await ms.snapshotAsync(), owner, createdAt: prev?.createdAt ?? now, updatedAt: now });
    } catch (e) {
      log(`session '${sid}' could not be stored`, e);
    }
  };

  const noteTokens = () => {
    if (opts.accessLog) c.set('note', `tokens=${gen.stats.promptTokens}+${gen.stats.generatedTokens}${timedOut ? ' timeout' : ''}`);
  };
  const usage = () => ({
    prompt_tokens: gen.stats.promptTokens,
    completion_tokens: gen.stats.generatedTokens,
    total_tokens: gen.stats.promptTokens + gen.stats.generatedTokens,
    prompt_tokens_details: { cached_tokens: gen.stats.cachedTokens },
  });
  const finish = () => (gen.finishReason === 'length' ? 'length' : 'stop');
  const idText = (id: number) => (lm.tokenizer ? lm.decode([id], false) : '');
  const tokenText = (t: GeneratedToken) => idText(t.token);
  const bytes = (s: string) => Array.from(new TextEncoder().encode(s));
  const chatLogprobs = (ts: GeneratedToken[]) => ({
    content: ts.map((t) => {
      const s = tokenText(t);
      const top = (t.topLogprobs ?? []).map((a) => {
        const at = idText(a.token);
        return { token: at, logprob: a.logprob, bytes: bytes(at) };
      });
      return { token: s, logprob: t.logprob ?? 0, bytes: bytes(s), top_logprobs: top };
    }),
    refusal: null,
  });
  // Legacy completions: each step's most likely tokens as an object of text → logprob (tokens whose
  // text repeats keep the likelier entry), or null without `logprobs` > 0.
  const legacyTop = (ts: GeneratedToken[]) => (r.topLogprobs
    ? ts.map((t) => {
      const o: Record<string, number> = {};
      for (const a of t.topLogprobs ?? []) {
        const at = idText(a.token);
        if (!(at in o)) o[at] = a.logprob;
      }
      return o;
    })
    : null);

  if (!r.stream) {
    try {
      const toks: GeneratedToken[] = [];
      for await (const t of gen) toks.push(t);
      noteTokens();
      if (gen.finishReason === 'abort') return gone();
      // Finished: the timeout no longer applies to storing the session.
      stopTimer();
      await save();
      if (r.kind === 'chat') {
        return json(200, {
          id, object: 'chat.completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
          choices: [{ index: 0, message: { role: 'assistant', content: gen.text, refusal: null }, logprobs: r.logprobs ? chatLogprobs(toks) : null, finish_reason: finish() }],
          usage: usage(),
        }, headers);
      }
      let logprobs: Record<string, unknown> | null = null;
      if (r.logprobs) {
        let off = echoText.length;
        const offsets: number[] = [];
        for (const t of toks) {
          offsets.push(off);
          off += t.text.length;
        }
        logprobs = { tokens: toks.map(tokenText), token_logprobs: toks.map((t) => t.logprob ?? 0), top_logprobs: legacyTop(toks), text_offset: offsets };
      }
      return json(200, {
        id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
        choices: [{ index: 0, text: echoText + gen.text, logprobs, finish_reason: finish() }],
        usage: usage(),
      }, headers);
    } finally {
      cleanup();
    }
  }

  // Streaming: one `data:` event per token that completes text, then the finish, usage and [DONE].
  // A client that goes away (the body's write fails or it is cancelled) aborts the request.
  const enc = new TextEncoder();
  const out = streamBody(() => ac.abort());
  // After a timeout the client is still there to be told, so writes no longer follow the aborted signal.
  const stillThere = new AbortController().signal;
  const send = (obj: unknown) => out.write(enc.encode(`data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`), timedOut ? stillThere : ac.signal);
  const base = r.kind === 'chat'
    ? { id, object: 'chat.completion.chunk', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint }
    : { id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint };
  const chunk = (text: string, finishReason: string | null, t?: GeneratedToken) => {
    if (r.kind === 'chat') {
      const delta = finishReason ? {} : { content: text };
      return { ...base, choices: [{ index: 0, delta, logprobs: r.logprobs && t ? chatLogprobs([t]) : null, finish_reason: finishReason }], ...(r.includeUsage ? { usage: null } : {}) };
    }
    const lp = r.logprobs && t ? { tokens: [tokenText(t)], token_logprobs: [t.logprob ?? 0], top_logprobs: legacyTop([t]), text_offset: [0] } : null;
    return { ...base, choices: [{ index: 0, text, logprobs: lp, finish_reason: finishReason }], ...(r.includeUsage ? { usage: null } : {}) };
  };

  const run = async () => {
    try {
      if (r.kind === 'chat') await send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...(r.includeUsage ? { usage: null } : {}) });
      else if (echoText) await send(chunk(echoText, null));
      for await (const t of gen) {
        if (!out.open) break;
        // A token that completes no text yet (half a character, a possible stop string) is sent
        // only when its logprob was asked for.
        if (t.text || r.logprobs) await send(chunk(t.text, null, t));
      }
      noteTokens();
      if (timedOut && out.open) {
        await send(timeoutError().body());
        await send('[DONE]');
        return;
      }
      if (!out.open || gen.finishReason === 'abort') return;
      stopTimer();
      await save();
      await send(chunk('', finish()));
      if (r.includeUsage) await send({ ...base, choices: [], usage: usage() });
      await send('[DONE]');
    } catch (e) {
      const api = toApiError(e);
      if (!api) log(`streamed ${r.kind} failed`, e);
      await send((api ?? internalError()).body());
      await send('[DONE]');
    } finally {
      cleanup();
      out.close();
    }
  };
  const running = run();
  // Workers: the request stays alive until the generation has ended, also after its client left
  // (otherwise its timers stop and the generation never gets to see that).
  executionCtx(c)?.waitUntil(running);
  return new Response(out.body, { status: 200, headers: { ...SSE_HEADERS, ...headers } });
}

/**
 * A session for `ids`: the stored state when its tokens begin the prompt (only the rest is then
 * run), else a fresh one. A snapshot that fails its checks (another model, corrupt bytes) counts as
 * no snapshot.
 */
function resume(lm: LanguageModel, prev: StoredSession | null, ids: number[], modelId: string, log: Log): ModelSession | null {
  if (!prev || prev.model !== modelId || prev.tokens.length === 0 || prev.tokens.length >= ids.length) return null;
  for (let i = 0; i < prev.tokens.length; i++) if (prev.tokens[i] !== ids[i]) return null;
  try {
    return lm.restore(prev.bytes);
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e;
    log(`session '${prev.id}' has an unusable snapshot; starting over`, e);
    return null;
  }
}
