// model_type → family. Families register themselves in src/models/index.ts.

import { ConfigError } from '../formats/errors';
import type { Family } from './net';
import type { RawConfig } from './common';

const families = new Map<string, Family>();

export function registerFamily(f: Family): void {
  for (const t of f.types) families.set(t, f);
}

export function supportedModelTypes(): string[] {
  return [...families.keys()].sort();
}

export function familyFor(config: RawConfig): Family {
  const t = config?.model_type;
  const f = typeof t === 'string' ? families.get(t) : undefined;
  if (!f) {
    throw new ConfigError('config.model_type', `${JSON.stringify(t)} is not supported; supported model types: ${supportedModelTypes().join(', ')}`);
  }
  return f;
}
