// What the pieces of the app share: its options, the model (loaded once, on first use), the
// generation queue, the sessions generating now, and the values middleware leaves on a request's
// context for the routes.

import type { Context } from 'hono';
import { detectToolFormat, type LanguageModel, type ToolFormat } from '../src/index';
import type { AppOptions } from './app';
import { chatStopIds } from './chat-stops';
import { toApiError } from './errors';
import { ApiError } from './openai';
import { PromptCache } from './prompt-cache';
import { GenerationQueue } from './queue';

/** The Hono environment of every piece of the app: values set on a request's context. */
export interface AppEnv {
  Variables: {
    /** Hash of the request's API key, set by the auth middleware (absent without keys). */
    owner?: string;
    /** Tokens of a generation request, for its access log line. */
    note?: string;
  };
}

export type Log = (msg: string, err?: unknown) => void;

/** The owner of a request's sessions: a hash of its API key ('' without keys). */
export function ownerOf(c: Context<AppEnv>): string {
  return c.get('owner') ?? '';
}

/** The loaded model and what the routes derive from it once. */
export interface Served {
  lm: LanguageModel;
  created: number;
  chatStopIds: number[];
  /** `system_fingerprint` of every response. */
  fingerprint: string;
  /** How the chat template writes tool calls, or null when it renders no tools. */
  toolFormat: ToolFormat | null;
}

/** The model, loaded once and shared by every request, and how its loading went (for /healthz). */
export class ModelLoader {
  private loading: Promise<Served> | null = null;
  private current: Served | null = null;
  /** A failure that stays (a model over budget stays over budget): every later use gets it at once. */
  private lasting: ApiError | null = null;
  /** The last failure of any kind, until a load succeeds. */
  private lastError: ApiError | null = null;
  private running = false;

  constructor(private readonly load: () => Promise<LanguageModel>, private readonly created: number, private readonly log: Log) {}

  /** The model once loaded, else null. */
  get served(): Served | null {
    return this.current;
  }

  /** The failure /healthz reports: a lasting one, else the last one unless a new load is running. */
  get failure(): ApiError | null {
    return this.lasting ?? (this.running ? null : this.lastError);
  }

  /** The model; `report` logs a failure of the load this call starts (ready()'s caller reports its own). */
  get(report = true): Promise<Served> {
    if (this.lasting) return Promise.reject(this.lasting);
    if (!this.loading) {
      this.running = true;
      this.loading = this.load().then((lm) => {
        this.running = false;
        this.lastError = null;
        const toolFormat = lm.chatTemplate ? detectToolFormat(lm.chatTemplate.source) : null;
        this.current = { lm, created: this.created, chatStopIds: chatStopIds(lm), fingerprint: `fp_${lm.hash.slice(0, 10)}`, toolFormat };
        return this.current;
      }, (e) => {
        this.running = false;
        const api = toApiError(e);
        // A model over budget stays over budget: remember it. Other failures are retried next time.
        if (api?.status === 503) this.lasting = api;
        else this.loading = null;
        if (report) this.log('the model failed to load', e);
        this.lastError = api ?? new ApiError(503, `the model could not be loaded: ${(e as Error)?.message ?? e}`, 'server_error', null, 'model_unavailable');
        throw this.lastError;
      });
    }
    return this.loading;
  }
}

export interface AppState {
  readonly opts: AppOptions;
  readonly queue: GenerationQueue;
  readonly model: ModelLoader;
  /** Where unexpected errors are reported. */
  readonly log: Log;
  /** When the app was created (Unix seconds): the model's `created`. */
  readonly created: number;
  /** Sessions with a generation running. */
  readonly busySessions: Set<string>;
  /** Sessions of finished requests, for later prompts that begin the same way. */
  readonly promptCache: PromptCache;
  /** Requests that reached the generation endpoints, whatever became of them (/healthz reports it). */
  generationRequests: number;
  /** Set by close(): generations are refused from then on. */
  closed: boolean;
}

/** Sessions the prompt cache keeps unless the options say otherwise. */
export const DEFAULT_PROMPT_CACHE = 4;

export function createState(opts: AppOptions): AppState {
  const queue = new GenerationQueue(opts.maxConcurrent, opts.maxQueue);
  const log = opts.log ?? ((m: string, e?: unknown) => console.error(`sparrow: ${m}`, e ?? ''));
  const created = Math.floor(Date.now() / 1000);
  return {
    opts,
    queue,
    model: new ModelLoader(opts.loadModel, created, log),
    log,
    created,
    busySessions: new Set<string>(),
    promptCache: new PromptCache(opts.promptCache ?? DEFAULT_PROMPT_CACHE),
    generationRequests: 0,
    closed: false,
  };
}
