// A bad generation request (sampling parameter, prompt, messages, session use), naming the
// parameter at fault. Servers map it to HTTP 400; the CLI to a usage error on the flag that set it.

import { SparrowError } from '../formats/errors';

export class RequestError extends SparrowError {
  constructor(readonly field: string, readonly detail: string) {
    super('REQUEST', `${field}: ${detail}`);
    this.name = 'RequestError';
  }
}
