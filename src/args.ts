// Command-line options as the CLI (src/cli.ts) and the local server (edge/local.ts) take them: one
// spec format, one parser and one help layout.
//
//   --name value   --name=value   --switch   --switch=true|false   -h / --help   --  (the rest are positionals)
//
// A value comes from the command line, else from the option's environment variables (the first one
// set and non-empty), else from its default. Values are checked against the spec (type, bounds,
// choices) wherever they come from; a bad one is an ArgsError naming the option (and the variable,
// when it came from the environment). Uses nothing but the language: it runs on Node, Bun, Deno and
// in the bundles.

export type OptionType = 'string' | 'int' | 'number' | 'boolean' | 'list';

export interface OptionSpec {
  /**
   * string: the text. int / number: a (safe) integer / a finite number. boolean: a switch, false
   * unless given (as a value, from `--x=` or the environment: 1, true, yes, on or 0, false, no, off).
   * list: every occurrence, in order.
   */
  type: OptionType;
  /** What the value is called in help and errors: `--model M`. */
  arg?: string;
  /** Help: one sentence or more; optionsHelp wraps it. */
  desc: string;
  /** Environment variables read, in this order, when the command line does not give the option. */
  env?: readonly string[];
  /** The value when neither the command line nor the environment gives one (never for a boolean). */
  default?: string | number | readonly string[];
  /** How help states a default the program works out itself ("the model's, at most 4096"). */
  defaultText?: string;
  /** int and number: the smallest value accepted. */
  min?: number;
  /** int and number: the largest value accepted. */
  max?: number;
  /** string: the values accepted. */
  choices?: readonly string[];
  /** list: each value is also split at commas (parts trimmed, empty parts dropped). */
  commas?: boolean;
}

export type OptionsSpec = Readonly<Record<string, OptionSpec>>;

type ValueOf<O extends OptionSpec> = O['type'] extends 'boolean'
  ? boolean
  : O['type'] extends 'int' | 'number'
    ? number
    : O['type'] extends 'list'
      ? string[]
      : string;

/** The values parseArgs gives for a spec: booleans always, options with a default always, others when given. */
export type OptionValues<S extends OptionsSpec> = {
  -readonly [K in keyof S]: S[K]['type'] extends 'boolean' ? boolean : S[K] extends { default: unknown } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined;
};

export type ParsedArgs<S extends OptionsSpec> = { help: true } | { help: false; values: OptionValues<S>; positionals: string[] };

export interface ParseOptions {
  /** Where an unknown option's error points to, e.g. "sparrow generate --help". */
  helpHint?: string;
  /** The environment (default: envGet). */
  env?: (name: string) => string | undefined;
}

/** Bad usage: an unknown option, a missing or malformed value. `option` is the option's name, when there is one. */
export class ArgsError extends Error {
  constructor(message: string, readonly option?: string) {
    super(message);
    this.name = 'ArgsError';
  }
}

/**
 * An environment variable, or undefined: on Deno without --allow-env reading one throws, and then
 * the settings come from flags and defaults only.
 */
export function envGet(name: string): string | undefined {
  const g = globalThis as any;
  try {
    if (g.Deno?.env?.get) return g.Deno.env.get(name) ?? undefined;
  } catch {
    return undefined;
  }
  return g.process?.env?.[name];
}

const TRUE = /^(1|true|yes|on)$/i;
const FALSE = /^(0|false|no|off)$/i;

/** "a, b or c". */
function alternatives(xs: readonly string[]): string {
  return xs.length < 2 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
}

/** What a number option accepts: "an integer ≥ 0 and ≤ 255". */
function numberExpectation(o: OptionSpec): string {
  let s = o.type === 'int' ? 'an integer' : 'a number';
  if (o.min !== undefined) s += ` ≥ ${o.min}`;
  if (o.max !== undefined) s += `${o.min !== undefined ? ' and' : ''} ≤ ${o.max}`;
  return s;
}

/**
 * One raw value as the option's type. `from` names the environment variable it came from. An
 * option with bounds or choices says what it must be; one without says what it needs.
 */
function convert(key: string, o: OptionSpec, raw: string, from?: string): unknown {
  const got = `got ${JSON.stringify(raw)}${from ? ` (from ${from})` : ''}`;
  switch (o.type) {
    case 'boolean': {
      if (TRUE.test(raw.trim())) return true;
      if (FALSE.test(raw.trim())) return false;
      throw new ArgsError(`--${key} takes no value, or true or false; ${got}`, key);
    }
    case 'int':
    case 'number': {
      const n = Number(raw);
      const ok = raw.trim() !== '' && (o.type === 'int' ? Number.isSafeInteger(n) : Number.isFinite(n));
      if (ok && (o.min === undefined || n >= o.min) && (o.max === undefined || n <= o.max)) return n === 0 ? 0 : n;
      const bounded = o.min !== undefined || o.max !== undefined;
      throw new ArgsError(bounded ? `--${key} must be ${numberExpectation(o)}, ${got}` : `option --${key} needs ${numberExpectation(o)}, ${got}`, key);
    }
    case 'list':
      return o.commas ? raw.split(',').map((x) => x.trim()).filter(Boolean) : [raw];
    default:
      if (o.choices && !o.choices.includes(raw)) throw new ArgsError(`--${key} must be ${alternatives(o.choices)}, ${got}`, key);
      return raw;
  }
}

/**
 * Parses a command line (without the program and command names). `-h` or `--help` anywhere (not as
 * an option's value) asks for help, whatever else is wrong with the line; otherwise the first
 * problem is thrown as an ArgsError.
 */
export function parseArgs<S extends OptionsSpec>(argv: readonly string[], spec: S, opts: ParseOptions = {}): ParsedArgs<S> {
  const env = opts.env ?? envGet;
  const hint = opts.helpHint ? ` (see ${opts.helpHint})` : '';
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  let help = false;
  const problems: ArgsError[] = [];
  const fail = (e: ArgsError) => void problems.push(e);
  const set = (key: string, o: OptionSpec, raw: string) => {
    try {
      const v = convert(key, o, raw);
      values[key] = o.type === 'list' ? [...((values[key] as string[] | undefined) ?? []), ...(v as string[])] : v;
    } catch (e) {
      if (!(e instanceof ArgsError)) throw e;
      fail(e);
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h' || a === '--help') {
      help = true;
      continue;
    }
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    if (!a.startsWith('--')) {
      fail(new ArgsError(`unknown option ${a}${hint}`));
      continue;
    }
    const eq = a.indexOf('=');
    const key = a.slice(2, eq < 0 ? undefined : eq);
    const o = Object.hasOwn(spec, key) ? spec[key] : undefined;
    if (!o || key === 'help') {
      fail(new ArgsError(`unknown option --${key}${hint}`, key));
      continue;
    }
    if (eq >= 0) set(key, o, a.slice(eq + 1));
    else if (o.type === 'boolean') values[key] = true;
    else if (i + 1 < argv.length) set(key, o, argv[++i]);
    else fail(new ArgsError(`option --${key} needs a value${o.arg ? ` (${o.arg})` : ''}`, key));
  }
  if (help) return { help: true };
  if (problems.length) throw problems[0];
  for (const [key, o] of Object.entries(spec)) {
    if (values[key] !== undefined) continue;
    const name = o.env?.find((e) => {
      const v = env(e);
      return v !== undefined && v !== '';
    });
    if (name !== undefined) values[key] = convert(key, o, env(name)!, name);
    else if (o.type === 'boolean') values[key] = false;
    else if (o.default !== undefined) values[key] = Array.isArray(o.default) ? [...o.default] : o.default;
  }
  return { help: false, values: values as OptionValues<S>, positionals };
}

export interface HelpOptions {
  /** Columns the text is wrapped to (default 110). */
  width?: number;
  /** The widest option column before descriptions start on a column of their own (default 26). */
  column?: number;
}

/** Words of `text` in lines of at most `first` characters, then `rest` (a longer word gets a line of its own). */
function wrap(text: string, first: number, rest: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + w.length > (lines.length ? rest : first)) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines;
}

/** How help shows an option's default, or ''. */
function defaultOf(o: OptionSpec): string {
  if (o.defaultText !== undefined) return o.defaultText;
  if (o.default === undefined) return '';
  return Array.isArray(o.default) ? o.default.join(',') : String(o.default);
}

/**
 * The option list of a help text, `--help` last: each option with its value's name, then its
 * environment variables in brackets, its description, and in parentheses its choices and its
 * default, wrapped to the width.
 */
export function optionsHelp(spec: OptionsSpec, opts: HelpOptions = {}): string {
  const width = opts.width ?? 110;
  const rows: [string, string][] = Object.entries(spec).map(([k, o]) => {
    const env = o.env?.length ? `[${o.env.map((e) => (o.type === 'boolean' ? `${e}=1` : e)).join(', ')}] ` : '';
    const dflt = defaultOf(o);
    const notes = [o.choices?.join(' | '), dflt && `default: ${dflt}`].filter(Boolean);
    return [`  --${k}${o.arg ? ` ${o.arg}` : ''}`, `${env}${o.desc}${notes.length ? ` (${notes.join('; ')})` : ''}`];
  });
  rows.push(['  -h, --help', 'show this help']);
  const col = Math.min(Math.max(...rows.map(([l]) => l.length)), opts.column ?? 26) + 2;
  const out: string[] = [];
  for (const [left, desc] of rows) {
    // An option wider than the column starts its description two spaces after it.
    const start = Math.max(col, left.length + 2);
    const [head = '', ...more] = wrap(desc, width - start, width - col);
    out.push(left.padEnd(start) + head);
    for (const l of more) out.push(' '.repeat(col) + l);
  }
  return out.join('\n') + '\n';
}
