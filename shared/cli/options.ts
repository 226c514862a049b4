/**
 * The option tables (table.ts) turned into commander options, typed values and launch's forwarded arguments.
 * Parsing validates each value with its table entry's `check`, so a bad option fails with a ConfigError that names
 * it before anything starts.
 */
import path from 'node:path';
import { Command, Option } from 'commander';
import { ConfigError } from '../errors.js';
import { validateTrainConfig, type TrainConfig } from '../config.js';
import { parseBackendChoice, type BackendChoice } from '../tf/names.js';
import { int, type AnySpec, type Forward, type OptionTable, type Role, type ValuesOf } from './spec.js';
import { ALL_TABLES, DATA_OPTIONS, TRAIN_OPTIONS } from './table.js';
import { parseImageSize } from '../data/image-options.js';
import type { DataOptions } from '../data/load.js';

type Opts = Record<string, unknown>;

/** commander's name for the parsed value: `batch-size` -> `batchSize`, `no-save` -> `save`. */
export function attributeOf(spec: AnySpec): string {
  return spec.flag.replace(/^no-/, '').replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

function defaultFor(spec: AnySpec, role: Role): unknown {
  return spec.roleDefaults?.[role] ?? spec.default;
}

function commanderOption(spec: AnySpec, role: Role): Option {
  const flags = `${spec.short ? `-${spec.short}, ` : ''}--${spec.flag}${spec.arg ? ` <${spec.arg}>` : ''}`;
  const option = new Option(flags, spec.help);
  if (spec.choices) option.choices(spec.choices);
  if (spec.arg) option.argParser((t: string) => spec.check(spec.parse(t), `--${spec.flag}`));
  const d = defaultFor(spec, role);
  if (d !== undefined && !spec.flag.startsWith('no-')) option.default(d);
  if (spec.required) option.makeOptionMandatory();
  return option;
}

/** A switch that is on unless turned off (`--no-<flag>`). */
function isOnByDefault(spec: AnySpec, role: Role): boolean {
  return !spec.arg && !spec.flag.startsWith('no-') && defaultFor(spec, role) === true;
}

/** Add every option of `role` from the tables to a subcommand, in table order. */
export function addRoleOptions(cmd: Command, role: Role, tables: readonly OptionTable[] = ALL_TABLES): Command {
  for (const table of tables)
    for (const spec of Object.values(table)) {
      if (!spec.roles.includes(role)) continue;
      cmd.addOption(commanderOption(spec, role));
      if (isOnByDefault(spec, role)) cmd.addOption(new Option(`--no-${spec.flag}`, `turn --${spec.flag} off`));
    }
  return cmd;
}

/**
 * The typed values of one table from parsed options. Options `role` does not take, or not given without a default,
 * get their default (or stay undefined).
 */
export function readValues<T extends OptionTable>(table: T, opts: Opts, role: Role): ValuesOf<T> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(table)) {
    const given = spec.roles.includes(role) ? opts[attributeOf(spec)] : undefined;
    out[key] = given ?? defaultFor(spec, role);
  }
  return out as ValuesOf<T>;
}

/** The options given on the command line (not defaults), by attribute name. */
export function explicitOptions(cmd: Command): Set<string> {
  return new Set(cmd.options.map((o) => o.attributeName()).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
}

/**
 * What `launch` passes on to the coordinator or to a worker: every option of the tables it forwards to `to`, as
 * command-line arguments (a true flag bare, false and absent values left out). `overrides` replaces (or, with
 * undefined, drops) values by attribute name.
 */
export function forwardedArgs(opts: Opts, to: Exclude<Forward, 'both'>, overrides: Opts = {}): string[] {
  const args: string[] = [];
  for (const table of ALL_TABLES) {
    for (const spec of Object.values(table)) {
      if (spec.forward !== to && spec.forward !== 'both') continue;
      const attr = attributeOf(spec);
      const v = attr in overrides ? overrides[attr] : opts[attr];
      if (v === false && isOnByDefault(spec, to)) args.push(`--no-${spec.flag}`);
      if (v === undefined || v === false) continue;
      args.push(`--${spec.flag}`);
      if (v !== true) args.push(String(v));
    }
  }
  return args;
}

/** How --data-dir is read, from the parsed options of `role`. */
export function readDataOptions(opts: Opts, role: Role): DataOptions {
  const v = readValues(DATA_OPTIONS, opts, role);
  return {
    ...(v.imageSize !== undefined ? { imageSize: parseImageSize(v.imageSize) } : {}),
    colorMode: v.colorMode,
    fit: v.imageFit,
    validationSplit: v.validationSplit,
  };
}

export function readTrainConfig(opts: Opts, role: Role = 'train'): TrainConfig {
  return validateTrainConfig(readValues(TRAIN_OPTIONS, opts, role));
}

export function readBackend(opts: Opts): BackendChoice {
  return parseBackendChoice(String(opts.backend ?? 'auto'));
}

export function defaultRunDir(opts: Opts): string {
  if (typeof opts.runDir === 'string') return opts.runDir;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return path.join('runs', `${stamp}-${process.pid}`);
}

/** Parse `HOST:PORT` (IPv6 as `[::1]:PORT`). */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(value);
  if (!m) throw new ConfigError(`expected HOST:PORT, got '${value}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`port out of range in '${value}'`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/**
 * End the process once `done` settles: set the exit code and let pending writes drain, but never hang on a stray
 * handle (the timer is unref'ed, so it only fires if something else keeps the process alive).
 */
export function exitWhenDone(done: Promise<number>, graceMs = 3000): void {
  void done.then((code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), graceMs).unref();
  });
}

/** A commander parser for the integer options of the small tools (dashboard, doctor) that have no table of their own. */
export function intOption(flag: string): (value: string) => number {
  const spec = int({ flag: flag.replace(/^--/, ''), help: '', roles: [] });
  return (value) => spec.check(spec.parse(value), flag) as number;
}
