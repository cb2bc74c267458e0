// A bad generation request (sampling parameter, prompt, messages, session use), naming the
// parameter at fault. Servers map it to HTTP 400; the CLI to a usage error on the flag that set it.

import { SparrowError } from '../formats/errors';

export class RequestError extends SparrowError {
  constructor(readonly field: string, readonly detail: string) {
    super('REQUEST', `${field}: ${detail}`);
    this.name = 'RequestError';
  }
}

/**
 * A prompt longer than the tokens allowed for it. `atLeast` is a lower bound of its length, or its
 * length when `exact` (a prompt already encoded, against the model's context of `limit` positions).
 */
export class ContextLengthError extends RequestError {
  constructor(field: string, readonly atLeast: number, readonly limit: number, readonly exact = false) {
    super(field, exact
      ? `has ${atLeast} tokens; the context holds ${limit}`
      : `${field === 'messages' ? 'have' : 'has'} at least ${atLeast} tokens; at most ${limit} fit`);
    this.name = 'ContextLengthError';
  }
}
