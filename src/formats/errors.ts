// Typed errors shared by the whole project. Each one names what is at fault: a file field
// (FormatError), a config field (ConfigError), or a memory need against its budget (BudgetError).
// `code` is stable and meant for programs (HTTP mapping, CLI exit codes); `message` is for people.

export class SparrowError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'SparrowError';
  }
}

/**
 * A checkpoint file (safetensors, GGUF, sharded index) is malformed or unsupported.
 * `field` is a path into the file's structure, e.g. `safetensors.header.tensors["x"].data_offsets`;
 * `file` names the file or URL when known.
 */
export class FormatError extends SparrowError {
  constructor(readonly field: string, readonly detail: string, readonly file?: string) {
    super('FORMAT', `${file ? `${file}: ` : ''}${field}: ${detail}`);
    this.name = 'FormatError';
  }
}

/** A model configuration (config.json and friends) is missing, unreadable, or holds an unsupported value. */
export class ConfigError extends SparrowError {
  constructor(readonly field: string, readonly detail: string) {
    super('CONFIG', `${field}: ${detail}`);
    this.name = 'ConfigError';
  }
}

/** An allocation would exceed the memory budget (e.g. the 128 MB of a Workers isolate). Sizes in bytes. */
export class BudgetError extends SparrowError {
  constructor(readonly need: number, readonly budget: number, readonly what = 'memory') {
    super('BUDGET', `${what} needs ${need} bytes (${mib(need)} MiB), budget is ${budget} bytes (${mib(budget)} MiB)`);
    this.name = 'BudgetError';
  }
}

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}
