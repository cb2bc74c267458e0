// Embeddings from a language model: an input's vector is the mean over its positions of the model's
// final hidden states (the residual stream after the final norm, the rows the LM head would turn
// into logits), scaled to unit length. Each input runs in a fresh session of its own (no state
// carries from one input to the next), in prefill chunks that yield to the host between them.
//
// Families whose net has no such output (Net.hiddenOutput unset) cannot make embeddings: embed()
// refuses them with a RequestError on `model` that names the family.

import type { LanguageModel, ModelSession } from './language-model';
import { ContextLengthError, RequestError } from './errors';
import { yieldToHost } from './host';
import { TokenLimitError } from './tokenizer';

/** Most inputs one call takes (the OpenAI embeddings API's limit). */
export const MAX_EMBEDDING_INPUTS = 2048;

export interface EmbedOptions {
  /** Checked between inputs and between prefill chunks; an abort rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Keeps the first `dimensions` components of each vector and scales the result to unit length
   * again (as OpenAI's text-embedding-3 models shorten theirs). 1 … the model's hidden size; default
   * all of them.
   */
  dimensions?: number;
  /**
   * Opens the fresh session each input runs in (default `lm.session()`); it is disposed after its
   * input. A server that keeps sessions of its own passes one that frees them when every state slot
   * is taken.
   */
  session?: () => ModelSession;
}

export interface EmbedResult {
  /** One unit-length (L2) vector per input, in input order. */
  embeddings: Float32Array[];
  /** Tokens run for all inputs together. */
  promptTokens: number;
}

/** Why `lm` cannot make embeddings (its family's net has no hidden-state output), or null when it can. */
export function embeddingSupport(lm: LanguageModel): string | null {
  if (lm.model.net.hiddenOutput) return null;
  return `the model family '${lm.model.modelType}' has no final hidden-state output, so it cannot make embeddings`;
}

/** The number of output components a `dimensions` option gives for `lm`; a RequestError on `dimensions` when out of range. */
export function embeddingDimensions(lm: LanguageModel, dimensions?: number): number {
  const H = lm.model.net.hidden;
  if (dimensions === undefined) return H;
  if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > H) {
    throw new RequestError('dimensions', `must be an integer from 1 to ${H} (this model's hidden size), got ${JSON.stringify(dimensions)}`);
  }
  return dimensions;
}

/**
 * The token ids of each input: text is encoded with the tokenizer (its special tokens added, as
 * LanguageModel.encode does), token ids are checked against the vocabulary. Every input must have
 * at least one token and at most the model's context; an empty, malformed or unencodable input is a
 * RequestError on `input`, a long one a ContextLengthError on `input`.
 */
export async function embeddingTokens(lm: LanguageModel, inputs: readonly (string | readonly number[])[], opts: { signal?: AbortSignal } = {}): Promise<number[][]> {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new RequestError('input', 'must hold at least one text or token id list');
  if (inputs.length > MAX_EMBEDDING_INPUTS) throw new RequestError('input', `holds ${inputs.length} inputs; at most ${MAX_EMBEDDING_INPUTS} are taken at once`);
  const V = lm.vocabSize, limit = lm.maxContext;
  const where = (i: number) => (inputs.length > 1 ? ` (item ${i})` : '');
  const out: number[][] = [];
  for (let i = 0; i < inputs.length; i++) {
    const x = inputs[i];
    if (i > 0 && i % 64 === 0) await yieldToHost();
    opts.signal?.throwIfAborted();
    let ids: number[];
    if (typeof x === 'string') {
      if (x === '') throw new RequestError('input', `holds an empty string${where(i)}; every input needs at least one token`);
      if (!lm.tokenizer) throw new RequestError('input', `holds text${where(i)}, but this checkpoint has no tokenizer.json; pass token ids`);
      try {
        ids = await lm.tokenizer.encodeAsync(x, { addSpecialTokens: true, limit, signal: opts.signal });
      } catch (e) {
        if (e instanceof TokenLimitError) throw new ContextLengthError('input', e.atLeast, e.limit);
        throw e;
      }
      if (!ids.length) throw new RequestError('input', `holds text that encodes to no tokens${where(i)}`);
    } else if (Array.isArray(x)) {
      if (!x.length) throw new RequestError('input', `holds an empty token id list${where(i)}; every input needs at least one token`);
      for (const id of x) {
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new RequestError('input', `holds token id ${JSON.stringify(id)}${where(i)}, outside the vocabulary [0, ${V})`);
      }
      ids = x.slice();
    } else {
      throw new RequestError('input', `must hold texts or token id lists${where(i)}`);
    }
    if (ids.length > limit) throw new ContextLengthError('input', ids.length, limit, true);
    out.push(ids);
  }
  return out;
}

/**
 * Embeds each input: the mean over its positions of the model's final hidden states (after the final
 * norm, before the LM head), L2-normalized to unit length; with `dimensions`, cut to its first
 * components and normalized again. Inputs are texts (encoded with special tokens) or token id lists;
 * each runs in a fresh session that is disposed after it, in chunks that yield to the host.
 *
 * Errors: RequestError on `model` when the family has no hidden-state output (the message names
 * it), on `dimensions` when out of 1 … hidden size, on `input` for an empty or malformed input;
 * ContextLengthError on `input` when an input is longer than the model's context.
 */
export async function embed(lm: LanguageModel, inputs: (string | number[])[], opts: EmbedOptions = {}): Promise<EmbedResult> {
  const why = embeddingSupport(lm);
  if (why) throw new RequestError('model', why);
  const dims = embeddingDimensions(lm, opts.dimensions);
  const seqs = await embeddingTokens(lm, inputs, opts);
  const embeddings: Float32Array[] = [];
  let promptTokens = 0;
  for (const ids of seqs) {
    opts.signal?.throwIfAborted();
    embeddings.push(await meanHidden(lm, opts.session?.() ?? lm.session(), ids, dims, opts.signal));
    promptTokens += ids.length;
  }
  return { embeddings, promptTokens };
}

/** The unit-length mean of the final hidden states of `ids`, cut to `dims` components, run in the fresh session `s` (disposed after). */
async function meanHidden(lm: LanguageModel, s: ModelSession, ids: number[], dims: number, signal?: AbortSignal): Promise<Float32Array> {
  const H = lm.model.net.hidden;
  try {
    if (s.model !== lm.model) throw new RequestError('session', 'belongs to another model');
    if (s.pos !== 0) throw new RequestError('session', `must be fresh (it holds ${s.pos} tokens)`);
    const C = s.inner.prefillChunk;
    const sum = new Float64Array(H);
    for (let i = 0; i < ids.length; i += C) {
      if (i > 0) {
        await yieldToHost();
        signal?.throwIfAborted();
      }
      const h = await s.inner.hidden(ids.slice(i, i + C));
      for (let r = 0; r < h.length; r += H) for (let j = 0; j < H; j++) sum[j] += h[r + j];
    }
    let norm2 = 0;
    for (let j = 0; j < dims; j++) {
      sum[j] /= ids.length;
      norm2 += sum[j] * sum[j];
    }
    // A zero mean stays zero rather than becoming NaN.
    const scale = norm2 > 0 ? 1 / Math.sqrt(norm2) : 0;
    const out = new Float32Array(dims);
    for (let j = 0; j < dims; j++) out[j] = sum[j] * scale;
    return out;
  } finally {
    s.dispose();
  }
}
