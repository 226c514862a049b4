/**
 * The shape of one command-line option (see table.ts for the options themselves): how it is spelled, its type and
 * default, its help, which roles take it and whom `launch` forwards it to. `check` validates one value, whether it
 * came from the command line (after `parse`) or from the network (`assign.config`), and throws a ConfigError that
 * names the field.
 */
import { ConfigError } from '../errors.js';

/** The subcommands whose options come from the tables (`evaluate` takes a few: backend, threads, data). */
export type Role = 'train' | 'coordinator' | 'worker' | 'launch' | 'evaluate';
/** Who `launch` passes the option on to (the option must then be one of launch's roles too). */
export type Forward = 'coordinator' | 'worker' | 'both';

export interface OptionSpec<V> {
  /** The long flag without dashes, e.g. `batch-size` (`no-save` for a negated boolean). */
  readonly flag: string;
  /** A one-letter alias, e.g. `H` for `-H`. */
  readonly short?: string;
  /** The argument's name in the help (`<n>`); absent for a boolean flag. */
  readonly arg?: string;
  readonly help: string;
  readonly default?: V;
  /** A default that differs for one role (launch picks a free port: `{ launch: 0 }`). */
  readonly roleDefaults?: Partial<Record<Role, V>>;
  readonly choices?: readonly string[];
  readonly roles: readonly Role[];
  readonly forward?: Forward;
  readonly required?: boolean;
  /** Command-line text to a value (before `check`). */
  readonly parse: (text: string) => unknown;
  /** Validate a value; `name` is how the error names the field (`--batch-size`, `assign.config.batchSize`). */
  readonly check: (value: unknown, name: string) => V;
}

type Base = Omit<OptionSpec<never>, 'parse' | 'check' | 'default' | 'roleDefaults' | 'choices'>;

/** A number from command-line text; text that is not one stays text, so the error shows what was typed. */
function toNumber(t: string): number | string {
  const n = Number(t);
  return t.trim() !== '' && !Number.isNaN(n) ? n : t;
}

function show(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function numberIn(name: string, v: unknown, lo: number, hi: number, integer: boolean): number {
  const ok = typeof v === 'number' && (integer ? Number.isInteger(v) : Number.isFinite(v)) && v >= lo && v <= hi;
  if (ok) return v;
  const unbounded = hi === Number.MAX_SAFE_INTEGER;
  const what = !integer
    ? `a number in [${lo}, ${hi}]`
    : unbounded && lo === 0
      ? 'a non-negative integer'
      : unbounded && lo === 1
        ? 'a positive integer'
        : unbounded
          ? `an integer of at least ${lo}`
          : `an integer in [${lo}, ${hi}]`;
  throw new ConfigError(`${name} must be ${what}, got ${show(v)}`);
}

/** An integer option (default range: non-negative). */
export function int<const O extends Base & { default?: number; roleDefaults?: Partial<Record<Role, number>> }>(
  o: O & { min?: number; max?: number },
): O & OptionSpec<number> {
  const lo = o.min ?? 0;
  const hi = o.max ?? Number.MAX_SAFE_INTEGER;
  return { ...o, parse: toNumber, check: (v, name) => numberIn(name, v, lo, hi, true) };
}

/** A real-valued option in [min, max]. */
export function real<const O extends Base & { default?: number }>(
  o: O & { min: number; max: number },
): O & OptionSpec<number> {
  return { ...o, parse: toNumber, check: (v, name) => numberIn(name, v, o.min, o.max, false) };
}

/** A free-text option (a path, an address, a template). */
export function text<const O extends Base & { default?: string }>(o: O): O & OptionSpec<string> {
  return {
    ...o,
    parse: (t) => t,
    check: (v, name) => {
      if (typeof v !== 'string') throw new ConfigError(`${name} must be a string, got ${show(v)}`);
      return v;
    },
  };
}

/** One of a fixed list of words. */
export function choice<const C extends readonly string[], const O extends Base & { default?: C[number] }>(
  choices: C,
  o: O,
): O & OptionSpec<C[number]> {
  return {
    ...o,
    choices,
    parse: (t) => t,
    check: (v, name) => {
      if (typeof v === 'string' && choices.includes(v)) return v as C[number];
      throw new ConfigError(`${name} must be one of ${choices.join(', ')}, got ${show(v)}`);
    },
  };
}

/** A flag without an argument. */
export function flag<const O extends Base & { default: boolean }>(o: O): O & OptionSpec<boolean> {
  return {
    ...o,
    parse: (t) => t,
    check: (v, name) => {
      if (typeof v !== 'boolean') throw new ConfigError(`${name} must be true or false, got ${show(v)}`);
      return v;
    },
  };
}

export type AnySpec = OptionSpec<unknown>;
export type OptionTable = Readonly<Record<string, AnySpec>>;

/** The values a table describes: an option without a default may be absent. */
export type ValuesOf<T extends OptionTable> = {
  -readonly [K in keyof T]: T[K] extends OptionSpec<infer V>
    ? T[K] extends { default: V }
      ? V
      : V | undefined
    : never;
};

/** The same option with a check of its own (which must accept what the original's type says). */
export function refine<S extends AnySpec>(spec: S, check: S['check']): S {
  return { ...spec, check };
}
