/**
 * The training config shared by `ringtrain train`, the coordinator (which hands it to every worker in
 * `assign.config`) and the benchmarks. Its fields, defaults and checks are the entries of TRAIN_OPTIONS and
 * RUN_OPTIONS (shared/cli/table.ts): the command line and the wire are validated by the same function, so a bad
 * value fails early with a ConfigError naming the field.
 */
import { ConfigError } from './errors.js';
import type { OptionTable, ValuesOf } from './cli/spec.js';
import { RUN_OPTIONS, TRAIN_OPTIONS } from './cli/table.js';
import { DEFAULT_LR } from './train/names.js';

/** The training config; `lr` is always set (the optimizer's default when none was given). */
export type TrainConfig = ValuesOf<typeof TRAIN_OPTIONS> & { lr: number };
/** The cluster settings the workers follow; with the training config, what `assign.config` carries. */
export type RunSettings = ValuesOf<typeof RUN_OPTIONS>;
export type RunConfig = TrainConfig & RunSettings;

function defaultsOf<T extends OptionTable>(table: T): ValuesOf<T> {
  return Object.fromEntries(Object.entries(table).map(([k, spec]) => [k, spec.default])) as ValuesOf<T>;
}

export const TRAIN_DEFAULTS: TrainConfig = { ...defaultsOf(TRAIN_OPTIONS), lr: DEFAULT_LR.adam };
export const RUN_DEFAULTS: RunSettings = defaultsOf(RUN_OPTIONS);

type Raw = Record<string, unknown>;

/** `prefix` names the fields in errors: '' for the command line (`--batch-size`), else `<prefix>.batchSize`. */
function checkTable<T extends OptionTable>(table: T, raw: Raw, prefix: string): ValuesOf<T> {
  const out: Raw = {};
  for (const [key, spec] of Object.entries(table)) {
    const v = raw[key] ?? spec.default;
    out[key] = v === undefined ? undefined : spec.check(v, prefix ? `${prefix}.${key}` : `--${spec.flag}`);
  }
  return out as ValuesOf<T>;
}

/** Check every field; missing ones get their defaults. Returns a new object. */
export function validateTrainConfig(raw: Raw, prefix = ''): TrainConfig {
  const c = checkTable(TRAIN_OPTIONS, raw, prefix);
  return { ...c, lr: c.lr ?? DEFAULT_LR[c.optimizer] };
}

/**
 * A run config received over the network: every field must be valid (missing ones get their defaults), unknown
 * fields are refused, so a worker never trains with a value other than the one the coordinator meant.
 */
export function validateRunConfig(raw: Raw, prefix: string): RunConfig {
  for (const key of Object.keys(raw))
    if (!(key in TRAIN_OPTIONS) && !(key in RUN_OPTIONS))
      throw new ConfigError(`${prefix}.${key} is not a known field`);
  return { ...validateTrainConfig(raw, prefix), ...checkTable(RUN_OPTIONS, raw, prefix) };
}
