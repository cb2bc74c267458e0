// Conversation sessions: POST /v1/sessions issues an unguessable id owned by the request's API key;
// GET and DELETE /v1/sessions/:id read and remove it. Another key, or an id that does not exist,
// gets 404. Mounted at /v1/sessions.

import { Hono, type Context } from 'hono';
import { readBody, parseJsonObject } from '../body';
import { ApiError, badRequest, randomId, type ParsedRequest } from '../openai';
import { ownerOf, type AppEnv, type AppState } from '../state';
import { SESSION_ID, metaOf, type SessionMeta, type StoredSession } from '../store';

/** A session id as the server issues it: unguessable, and within SESSION_ID. */
export function newSessionId(): string {
  return randomId('sess', 32);
}

/** The session a generation request names (`session` in the body, else the x-session-id header), if any. */
export function requestSessionId(c: Context<AppEnv>, r?: ParsedRequest): string | undefined {
  const h = c.req.header('x-session-id');
  const id = r?.session ?? (h === undefined || h === '' ? undefined : h);
  if (id !== undefined && !SESSION_ID.test(id)) {
    throw badRequest(`session id must be 1–128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`, 'session', 'invalid_value');
  }
  return id;
}

/** The session's metadata when it exists and belongs to the request's key; else 404 on `param`. */
export async function ownedSession(state: AppState, c: Context<AppEnv>, id: string, param: string): Promise<SessionMeta> {
  const m = await state.opts.store.meta(id);
  // Someone else's session is reported exactly as one that does not exist.
  if (!m || m.owner !== ownerOf(c)) {
    throw new ApiError(404, `no session '${id}'; create one with POST /v1/sessions`, 'invalid_request_error', param, 'session_not_found');
  }
  return m;
}

function pathSession(c: Context<AppEnv>): string {
  const id = c.req.param('id') ?? '';
  if (!SESSION_ID.test(id)) throw badRequest(`session id must be 1–128 characters of letters, digits, '.', '_' or '-'`, 'id', 'invalid_value');
  return id;
}

export function sessionRoutes(state: AppState): Hono<AppEnv> {
  const { opts, busySessions } = state;
  const routes = new Hono<AppEnv>();

  const sessionObject = (id: string, m: SessionMeta) => ({
    id, object: 'session', model: m.model, tokens: m.tokens, bytes: m.bytes, created: Math.floor(m.createdAt / 1000), updated: Math.floor(m.updatedAt / 1000), busy: busySessions.has(id),
  });

  routes.post('/', async (c) => {
    // The body is optional; when there is one it must be a JSON object (no fields are read yet).
    const text = await readBody(c.req.raw, opts.maxBodyBytes);
    if (text.trim()) parseJsonObject(text);
    const now = Date.now();
    const s: StoredSession = { id: newSessionId(), model: opts.modelId, tokens: [], bytes: new Uint8Array(0), owner: ownerOf(c), createdAt: now, updatedAt: now };
    await opts.store.put(s);
    return c.json(sessionObject(s.id, metaOf(s)), 200, { 'x-session-id': s.id });
  });

  routes.get('/:id', async (c) => {
    const id = pathSession(c);
    return c.json(sessionObject(id, await ownedSession(state, c, id, 'id')));
  });

  routes.delete('/:id', async (c) => {
    const id = pathSession(c);
    await ownedSession(state, c, id, 'id');
    if (busySessions.has(id)) throw new ApiError(409, `session '${id}' is generating; delete it when the request ends`, 'invalid_request_error', 'id', 'session_busy');
    if (!(await opts.store.delete(id))) throw new ApiError(404, `no session '${id}'`, 'invalid_request_error', 'id', 'session_not_found');
    return c.json({ id, object: 'session.deleted', deleted: true });
  });

  return routes;
}
