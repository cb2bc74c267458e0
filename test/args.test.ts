// The option parser the CLI and the local server share (src/args.ts): the two spellings of a value,
// help, errors that name the option, environment fallbacks and the help layout.
import { describe, expect, it } from 'vitest';
import { ArgsError, optionsHelp, parseArgs, type OptionsSpec } from '../src/args';

const SPEC = {
  name: { type: 'string', arg: 'S', desc: 'a name', default: 'anon' },
  count: { type: 'int', arg: 'N', desc: 'how many' },
  port: { type: 'int', arg: 'N', desc: 'a port', env: ['APP_PORT', 'PORT'], min: 0, max: 65535, default: 8080 },
  ratio: { type: 'number', arg: 'R', desc: 'a ratio' },
  mode: { type: 'string', arg: 'M', desc: 'a mode', choices: ['fast', 'slow'] },
  verbose: { type: 'boolean', desc: 'say more', env: ['APP_VERBOSE'] },
  stop: { type: 'list', arg: 'S', desc: 'stop strings' },
  key: { type: 'list', arg: 'K', desc: 'keys', env: ['APP_KEY'], commas: true },
} as const satisfies OptionsSpec;

const noEnv = () => undefined;
const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

function values(argv: string[], env: (name: string) => string | undefined = noEnv) {
  const r = parseArgs(argv, SPEC, { env, helpHint: 'app --help' });
  if (r.help) throw new Error('help');
  return r;
}

function error(argv: string[], env: (name: string) => string | undefined = noEnv): ArgsError {
  try {
    parseArgs(argv, SPEC, { env, helpHint: 'app --help' });
  } catch (e) {
    expect(e).toBeInstanceOf(ArgsError);
    return e as ArgsError;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
}

describe('parseArgs', () => {
  it('takes --k v and --k=v, booleans as switches, lists repeated, positionals and --', () => {
    const r = values(['a', '--name', 'x', '--count=3', '--ratio', '-0.5', '--verbose', '--stop', 'a,b', '--stop=c', '-', '--', '--name', 'y']);
    expect(r.values).toEqual({ name: 'x', count: 3, port: 8080, ratio: -0.5, mode: undefined, verbose: true, stop: ['a,b', 'c'], key: undefined });
    expect(r.positionals).toEqual(['a', '-', '--name', 'y']);
    // The last of a repeated single-valued option wins; an empty value is a value.
    expect(values(['--name', 'a', '--name=']).values.name).toBe('');
  });

  it('-h or --help anywhere asks for help, even after a bad option; a value that reads --help is a value', () => {
    expect(parseArgs(['-h'], SPEC, { env: noEnv })).toEqual({ help: true });
    expect(parseArgs(['--bogus', '--count', 'x', '--help'], SPEC, { env: noEnv })).toEqual({ help: true });
    expect(values(['--name', '--help']).values.name).toBe('--help');
  });

  it('errors name the option', () => {
    expect(error(['--bogus']).message).toBe('unknown option --bogus (see app --help)');
    expect(error(['-x']).message).toBe('unknown option -x (see app --help)');
    expect(error(['--count']).message).toBe('option --count needs a value (N)');
    expect(error(['--count', 'many']).message).toBe('option --count needs an integer, got "many"');
    expect(error(['--count', '1.5']).message).toBe('option --count needs an integer, got "1.5"');
    expect(error(['--count', ' ']).message).toBe('option --count needs an integer, got " "');
    expect(error(['--ratio=Infinity']).message).toBe('option --ratio needs a number, got "Infinity"');
    expect(error(['--port', '70000']).message).toBe('--port must be an integer ≥ 0 and ≤ 65535, got "70000"');
    expect(error(['--port', 'many']).message).toBe('--port must be an integer ≥ 0 and ≤ 65535, got "many"');
    expect(error(['--mode', 'medium']).message).toBe('--mode must be fast or slow, got "medium"');
    expect(error(['--verbose=maybe']).message).toBe('--verbose takes no value, or true or false; got "maybe"');
    expect(error(['--count', 'x', '--bogus']).option).toBe('count');
  });

  it('falls back to the environment (first variable set and non-empty), then the default, and checks what it reads', () => {
    expect(values([], envOf({ PORT: '9000' })).values.port).toBe(9000);
    expect(values([], envOf({ APP_PORT: '', PORT: '9000' })).values.port).toBe(9000);
    expect(values([], envOf({ APP_PORT: '7000', PORT: '9000' })).values.port).toBe(7000);
    expect(values(['--port', '1'], envOf({ APP_PORT: '7000' })).values.port).toBe(1);
    expect(values([], envOf({ APP_VERBOSE: 'yes' })).values.verbose).toBe(true);
    expect(values(['--verbose=false'], envOf({ APP_VERBOSE: '1' })).values.verbose).toBe(false);
    expect(values([], envOf({ APP_KEY: ' a, ,b ' })).values.key).toEqual(['a', 'b']);
    expect(values(['--key', 'c,d', '--key', 'e']).values.key).toEqual(['c', 'd', 'e']);
    expect(values(['--key', ',']).values.key).toEqual([]);
    expect(error([], envOf({ PORT: 'http' })).message).toBe('--port must be an integer ≥ 0 and ≤ 65535, got "http" (from PORT)');
    expect(error([], envOf({ APP_VERBOSE: 'perhaps' })).message).toBe('--verbose takes no value, or true or false; got "perhaps" (from APP_VERBOSE)');
  });

  it('reads the process environment by default', () => {
    process.env.SPARROW_ARGS_TEST_PORT = '4242';
    try {
      const r = parseArgs([], { port: { type: 'int', desc: 'p', env: ['SPARROW_ARGS_TEST_PORT'] } });
      expect(r).toEqual({ help: false, values: { port: 4242 }, positionals: [] });
    } finally {
      delete process.env.SPARROW_ARGS_TEST_PORT;
    }
  });
});

describe('optionsHelp', () => {
  it('lists every option with its value, variables, choices and default, then --help, wrapped to the width', () => {
    const text = optionsHelp(SPEC, { width: 60 });
    for (const k of Object.keys(SPEC)) expect(text).toMatch(new RegExp(`^  --${k}\\b`, 'm'));
    expect(text).toMatch(/^ {2}--port N\s+\[APP_PORT, PORT\] a port \(default: 8080\)$/m);
    expect(text).toMatch(/^ {2}--mode M\s+a mode \(fast \| slow\)$/m);
    expect(text).toMatch(/^ {2}--verbose\s+\[APP_VERBOSE=1\] say more$/m);
    expect(text.trimEnd().split('\n').pop()).toMatch(/^ {2}-h, --help\s+show this help$/);
    const long = optionsHelp({ x: { type: 'string', desc: 'word '.repeat(30).trim() } }, { width: 40 });
    const lines = long.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(40);
    expect(lines[1]).toMatch(/^ {14}word/);
  });
});
