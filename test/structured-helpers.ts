// A JSON Schema for structured-output tests and a hand-written check of values against it.

/** Nested objects, arrays, enums and required fields; every string and array is bounded, so a reply always completes. */
export const PET_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 12 },
    kind: { enum: ['fox', 'cat', 'owl'] },
    count: { enum: [1, 2, 3] },
    tags: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 },
    home: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 10 }, garden: { type: 'boolean' } },
      required: ['city'],
    },
    alive: { type: 'boolean' },
  },
  required: ['name', 'kind', 'home'],
} as const;

/** Checks a value against PET_SCHEMA by hand; returns what is wrong, or null. */
export function petProblem(v: any): string | null {
  const obj = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!obj(v)) return 'not an object';
  for (const k of Object.keys(v)) if (!(k in PET_SCHEMA.properties)) return `extra property ${k}`;
  for (const k of PET_SCHEMA.required) if (!(k in v)) return `missing ${k}`;
  if (typeof v.name !== 'string' || v.name.length < 1 || v.name.length > 12) return 'name';
  if (!['fox', 'cat', 'owl'].includes(v.kind)) return 'kind';
  if ('count' in v && ![1, 2, 3].includes(v.count)) return 'count';
  if ('tags' in v && (!Array.isArray(v.tags) || v.tags.length > 3 || v.tags.some((t: unknown) => typeof t !== 'string' || t.length > 8))) return 'tags';
  if (!obj(v.home) || typeof v.home.city !== 'string' || v.home.city.length > 10) return 'home';
  for (const k of Object.keys(v.home)) if (k !== 'city' && k !== 'garden') return `extra home property ${k}`;
  if ('garden' in v.home && typeof v.home.garden !== 'boolean') return 'home.garden';
  if ('alive' in v && typeof v.alive !== 'boolean') return 'alive';
  return null;
}
