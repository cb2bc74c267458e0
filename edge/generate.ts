// A completion or chat completion, from parsed request to response: the prompt's tokens and every
// check the library would make, a place in the generation queue, the session it resumes, and the
// reply, whole (JSON) or streamed token by token (server-sent events). Cancellation (the client going
// away, the request timeout) gives back the queue place, the session and its state slot at once.

import type { Context } from 'hono';
import {
  ContextLengthError, Grammar, SnapshotError, ToolCallParser, resolveSampling, templateMessages, toolCallGbnf, toolFunctions,
  type ChatMessage, type GeneratedToken, type Generation, type LanguageModel, type ModelSession, type ToolCall,
} from '../src/index';
import { internalError, json, toApiError } from './errors';
import { ApiError, badRequest, cachedGrammar, randomId, type ParsedRequest } from './openai';
import { QueueAbortError } from './queue';
import { RequestAbort, checkServing } from './request';
import { ownedSession, requestSessionId } from './routes/sessions';
import { SSE_HEADERS, executionCtx, streamBody } from './sse';
import { ownerOf, type AppEnv, type AppState, type Log } from './state';
import type { StoredSession } from './store';

/** Answers one parsed generation request; its errors are thrown for the app's error handler. */
export async function generate(state: AppState, c: Context<AppEnv>, r: ParsedRequest): Promise<Response> {
  const { opts, queue, busySessions, log } = state;
  checkServing(state, r.model);
  const sid = requestSessionId(c, r);
  const owner = ownerOf(c);
  if (sid !== undefined) await ownedSession(state, c, sid, 'session');
  const m = await state.model.get();
  const lm = m.lm;
  if (lm.diffusion) {
    // Canvases are denoised in fresh state each time: nothing to resume, and no autoregressive text to read calls from.
    if (sid !== undefined) throw badRequest('block-diffusion models keep no sessions (the session option, x-session-id)', 'session', 'unsupported_model');
    if (r.kind === 'chat' && r.tools !== undefined && r.toolChoice !== 'none') throw badRequest('block-diffusion models do not support tools', 'tools', 'unsupported_model');
  }

  // Prompt tokens, and every check the library would make, before taking a place in the queue.
  // Text is encoded in steps that yield, and no further than the context: a prompt that cannot fit
  // is refused as soon as that is certain (by its byte count alone when it is far too long).
  const prompts: Prompt[] = [];
  const limit = lm.maxContext - 1;
  /** The reply may hold tool calls: the tools are rendered into the prompt and the text is read for calls. */
  const useTools = r.kind === 'chat' && r.tools !== undefined && r.toolChoice !== 'none';
  // Llama 3 and Mistral replies open their calls with a special token (<|python_tag|>, [TOOL_CALLS]): kept in the text for the parser.
  const specialTokens = useTools && m.toolFormat !== 'hermes';
  const reqAbort = c.req.raw.signal;
  const batch = (r.prompts?.length ?? 1) > 1;
  try {
    if (r.kind === 'chat') {
      if (!lm.chatTemplate) throw badRequest('this model has no chat template; use /v1/completions', 'messages', 'unsupported_model');
      if (useTools && !m.toolFormat) {
        throw badRequest(`this model's chat template renders no tools (or writes calls in a format this server does not read: it reads <tool_call> JSON, Llama 3 JSON and Mistral [TOOL_CALLS])`, 'tools', 'unsupported_model');
      }
      const messages = templateMessages(r.messages as ChatMessage[], { format: m.toolFormat }) as ChatMessage[];
      const ids = await lm.encodeChatAsync(messages, { limit, signal: reqAbort, tools: useTools ? r.tools : undefined }).catch((e) => tooLong(lm, e, 'messages'));
      if (useTools && r.toolChoice !== 'auto') {
        // A reply that must be tool calls: the calls' format, the functions' names and their arguments' schemas as a grammar.
        const name = typeof r.toolChoice === 'object' ? r.toolChoice.name : undefined;
        const gbnf = toolCallGbnf(m.toolFormat!, toolFunctions(r.tools!), { name, parallel: r.parallelToolCalls });
        r.params.grammar = cachedGrammar(`gbnf:${gbnf}`, () => Grammar.fromGbnf(gbnf));
      }
      r.params.stopTokenIds = m.chatStopIds;
      prompts.push({ ids, echo: '', param: 'messages' });
    } else {
      for (const [i, p] of (r.prompts ?? []).entries()) {
        const param = batch ? `prompt[${i}]` : 'prompt';
        if (typeof p === 'string') {
          if (p === '') throw badRequest(`'${param}' is empty`, param, 'invalid_value');
          const ids = await lm.encodeAsync(p, { limit, signal: reqAbort }).catch((e) => tooLong(lm, e, param));
          prompts.push({ ids, echo: r.echo ? p : '', param });
        } else prompts.push({ ids: p, echo: r.echo && lm.tokenizer ? lm.decode(p) : '', param });
      }
    }
  } catch (e) {
    if (reqAbort?.aborted) return new Response(null, { status: 499 });
    throw e;
  }
  const V = lm.vocabSize;
  for (const { ids, param } of prompts) {
    if (!ids.length) throw badRequest(`the prompt encodes to no tokens`, param, 'invalid_value');
    const bad = ids.find((id) => id >= V);
    if (bad !== undefined) throw badRequest(`token id ${bad} is outside the vocabulary [0, ${V})`, param, 'invalid_value');
    if (ids.length >= lm.maxContext) {
      throw badRequest(`the prompt has ${ids.length} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, param, 'context_length_exceeded');
    }
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
  const abort = new RequestAbort(c, opts.requestTimeoutMs);

  let release: (() => void) | null = null;
  /** The session of the prompt being answered (its choices run one after another on it). */
  let ms: ModelSession | null = null;
  let prev: StoredSession | null = null;
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    abort.release();
    ms?.dispose();
    ms = null;
    if (sid !== undefined) busySessions.delete(sid);
    release?.();
    release = null;
  };
  abort.signal.addEventListener('abort', cleanup, { once: true });

  // Choices: n per prompt, numbered prompt by prompt. A prompt's choices run one after another on
  // one session, so the later ones find the prompt's state there (see ModelSession.reuse). Without
  // a stored session, that session comes from the prompt cache when one there shares a prefix, and
  // goes back to it afterwards.
  const n = r.n;
  const choices: Choice[] = [];
  const sessionFor = (p: Prompt): ModelSession => {
    const cache = state.promptCache;
    if (sid !== undefined) return cache.withSlot(() => resume(lm, prev, p.ids, opts.modelId, log) ?? lm.session());
    return cache.take(owner, p.ids) ?? cache.withSlot(() => lm.session());
  };
  /** Starts choice j of prompt p (its session taken when j is 0). */
  const startChoice = (pi: number, j: number): Choice => {
    const p = prompts[pi];
    if (j === 0 && !lm.diffusion) ms = sessionFor(p);
    const seed = r.params.seed === undefined ? undefined : r.params.seed + j;
    const gen = lm.generate(p.ids, { ...r.params, seed, session: lm.diffusion ? undefined : ms!, signal: abort.signal, specialTokens });
    const ch: Choice = { index: pi * n + j, prompt: p, gen, toks: [], first: j === 0, parser: useTools ? new ToolCallParser(m.toolFormat!) : null, content: '', calls: [] };
    choices.push(ch);
    return ch;
  };
  /** After the last choice of a prompt: the session is stored (a named session) or cached. */
  const endPrompt = async (ch: Choice) => {
    if (!ms || ch.gen.finishReason === 'abort' || ch.gen.finishReason === null) return;
    if (sid !== undefined) {
      await save(ch.gen);
      return;
    }
    const s = ms;
    ms = null;
    state.promptCache.put(owner, s);
  };

  try {
    release = await queue.acquire(abort.signal);
    if (cleaned) {
      release();
      return abort.gone();
    }
    if (sid !== undefined) {
      prev = await opts.store.get(sid);
      if (cleaned) return abort.gone();
      if (prev && (prev.owner ?? '') !== owner) throw new ApiError(404, `no session '${sid}'`, 'invalid_request_error', 'session', 'session_not_found');
    }
    // The first choice starts here, so that what the library refuses is an HTTP error, not an event.
    startChoice(0, 0);
  } catch (e) {
    cleanup();
    if (e instanceof QueueAbortError) return abort.gone();
    throw e;
  }

  const id = randomId(r.kind === 'chat' ? 'chatcmpl' : 'cmpl');
  const createdAt = Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = sid !== undefined ? { 'x-session-id': sid } : {};

  /** After a finished generation: the state covers every generated token, then it is stored. */
  const save = async (gen: Generation) => {
    if (sid === undefined || !ms) return;
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

  const promptTokens = () => prompts.reduce((a, p) => a + p.ids.length, 0);
  const completionTokens = () => choices.reduce((a, ch) => a + ch.gen.stats.generatedTokens, 0);
  const noteTokens = () => {
    if (opts.accessLog) c.set('note', `tokens=${promptTokens()}+${completionTokens()}${abort.timedOut ? ' timeout' : ''}`);
  };
  const usage = () => ({
    prompt_tokens: promptTokens(),
    completion_tokens: completionTokens(),
    total_tokens: promptTokens() + completionTokens(),
    prompt_tokens_details: { cached_tokens: choices.reduce((a, ch) => a + (ch.first ? ch.gen.stats.cachedTokens : 0), 0) },
  });
  const finish = (gen: Generation, ch?: Choice) => (gen.finishReason === 'length' ? 'length' : ch?.calls.length ? 'tool_calls' : 'stop');
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
  const legacyLogprobs = (ch: Choice) => {
    let off = ch.prompt.echo.length;
    const offsets: number[] = [];
    for (const t of ch.toks) {
      offsets.push(off);
      off += t.text.length;
    }
    return { tokens: ch.toks.map(tokenText), token_logprobs: ch.toks.map((t) => t.logprob ?? 0), top_logprobs: legacyTop(ch.toks), text_offset: offsets };
  };

  if (!r.stream) {
    try {
      for (let pi = 0; pi < prompts.length; pi++) {
        for (let j = 0; j < n; j++) {
          const ch = pi === 0 && j === 0 ? choices[0] : startChoice(pi, j);
          for await (const t of ch.gen) ch.toks.push(t);
          if (ch.gen.finishReason === 'abort') {
            noteTokens();
            return abort.gone();
          }
          if (j === n - 1) {
            // Finished: the timeout no longer applies to storing the session.
            if (sid !== undefined) abort.stopTimer();
            await endPrompt(ch);
          }
        }
      }
      noteTokens();
      abort.stopTimer();
      if (r.kind === 'chat') {
        return json(200, {
          id, object: 'chat.completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
          choices: choices.map((ch) => {
            if (!ch.parser) {
              return { index: ch.index, message: { role: 'assistant', content: ch.gen.text, refusal: null }, logprobs: r.logprobs ? chatLogprobs(ch.toks) : null, finish_reason: finish(ch.gen) };
            }
            readCalls(ch, ch.gen.text, r.parallelToolCalls);
            readCalls(ch, null, r.parallelToolCalls);
            const message = ch.calls.length
              ? { role: 'assistant', content: ch.content || null, refusal: null, tool_calls: ch.calls.map((c) => callObject(c)) }
              : { role: 'assistant', content: ch.content, refusal: null };
            return { index: ch.index, message, logprobs: r.logprobs ? chatLogprobs(ch.toks) : null, finish_reason: finish(ch.gen, ch) };
          }),
          usage: usage(),
        }, headers);
      }
      return json(200, {
        id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
        choices: choices.map((ch) => ({ index: ch.index, text: ch.prompt.echo + ch.gen.text, logprobs: r.logprobs ? legacyLogprobs(ch) : null, finish_reason: finish(ch.gen) })),
        usage: usage(),
      }, headers);
    } finally {
      cleanup();
    }
  }

  // Streaming: one `data:` event per token that completes text (each naming its choice's index), a
  // finish event as each choice ends, then the usage and [DONE]. A client that goes away (the
  // body's write fails or it is cancelled) aborts the request.
  const enc = new TextEncoder();
  const out = streamBody(() => abort.abort());
  // After a timeout the client is still there to be told, so writes no longer follow the aborted signal.
  const stillThere = new AbortController().signal;
  const send = (obj: unknown) => out.write(enc.encode(`data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`), abort.timedOut ? stillThere : abort.signal);
  const base = r.kind === 'chat'
    ? { id, object: 'chat.completion.chunk', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint }
    : { id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint };
  const usageNull = r.includeUsage ? { usage: null } : {};
  const chunk = (index: number, text: string, finishReason: string | null, t?: GeneratedToken) => {
    if (r.kind === 'chat') {
      const delta = finishReason ? {} : { content: text };
      return { ...base, choices: [{ index, delta, logprobs: r.logprobs && t ? chatLogprobs([t]) : null, finish_reason: finishReason }], ...usageNull };
    }
    const lp = r.logprobs && t ? { tokens: [tokenText(t)], token_logprobs: [t.logprob ?? 0], top_logprobs: legacyTop([t]), text_offset: [0] } : null;
    return { ...base, choices: [{ index, text, logprobs: lp, finish_reason: finishReason }], ...usageNull };
  };

  /** With tools: a piece of text (null at the end) as content and tool-call deltas. */
  const sendCalls = async (ch: Choice, text: string | null, t?: GeneratedToken) => {
    const before = ch.calls.length;
    const got = readCalls(ch, text, r.parallelToolCalls);
    if (got.content || (t && r.logprobs)) await send(chunk(ch.index, got.content, null, t));
    for (const [k, c] of got.calls.entries()) {
      await send({ ...base, choices: [{ index: ch.index, delta: { tool_calls: [callObject(c, before + k)] }, logprobs: null, finish_reason: null }], ...usageNull });
    }
  };

  const run = async () => {
    try {
      for (let pi = 0; pi < prompts.length; pi++) {
        for (let j = 0; j < n; j++) {
          const ch = pi === 0 && j === 0 ? choices[0] : startChoice(pi, j);
          if (r.kind === 'chat') await send({ ...base, choices: [{ index: ch.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...usageNull });
          else if (ch.prompt.echo) await send(chunk(ch.index, ch.prompt.echo, null));
          for await (const t of ch.gen) {
            if (!out.open) break;
            if (ch.parser) {
              await sendCalls(ch, t.text, t);
              continue;
            }
            // A token that completes no text yet (half a character, a possible stop string) is sent
            // only when its logprob was asked for.
            if (t.text || r.logprobs) await send(chunk(ch.index, t.text, null, t));
          }
          if (ch.parser && out.open && ch.gen.finishReason !== 'abort' && !abort.timedOut) await sendCalls(ch, null);
          if (abort.timedOut && out.open) {
            noteTokens();
            await send(abort.timeoutError().body());
            await send('[DONE]');
            return;
          }
          if (!out.open || ch.gen.finishReason === 'abort') {
            noteTokens();
            return;
          }
          if (j === n - 1) {
            if (sid !== undefined) abort.stopTimer();
            await endPrompt(ch);
          }
          await send(chunk(ch.index, '', finish(ch.gen, ch)));
        }
      }
      noteTokens();
      abort.stopTimer();
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

/** A prompt of the request: its tokens, the text echoed before its completions, the parameter it came from. */
interface Prompt {
  ids: number[];
  echo: string;
  param: string;
}

/** One choice: its index in the response, its prompt, its generation and the tokens it has given. */
interface Choice {
  index: number;
  prompt: Prompt;
  gen: Generation;
  toks: GeneratedToken[];
  /** The prompt's first choice (its cached tokens are the request's). */
  first: boolean;
  /** With tools: reads the text for calls. */
  parser: ToolCallParser | null;
  /** With tools: the text that is not calls, and the calls, so far. */
  content: string;
  calls: ToolCall[];
}

/** Feeds a piece of a choice's text to its tool-call parser (at the end, `text` null): what is new. */
function readCalls(ch: Choice, text: string | null, parallel: boolean): { content: string; calls: ToolCall[] } {
  const got = text === null ? ch.parser!.finish() : ch.parser!.push(text);
  // Without parallel calls, a reply keeps its first call.
  const calls = parallel ? got.calls : got.calls.slice(0, Math.max(0, 1 - ch.calls.length));
  ch.content += got.content;
  ch.calls.push(...calls);
  return { content: got.content, calls };
}

const callObject = (c: ToolCall, index?: number) => ({ ...(index === undefined ? {} : { index }), id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } });

function tooLong(lm: LanguageModel, e: unknown, param: string): never {
  if (e instanceof ContextLengthError) {
    throw badRequest(`the prompt has at least ${e.atLeast} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, param, 'context_length_exceeded');
  }
  throw e;
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
