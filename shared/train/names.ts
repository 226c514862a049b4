/**
 * The names of the built-in models and optimizers, without TensorFlow.js: the option tables (and with them the
 * coordinator, which never loads TensorFlow.js) need the names, not the models.
 */
import { ConfigError, ModelUnknownError } from '../errors.js';

export const MODEL_NAMES = ['lenet5', 'keras-cnn', 'mlp'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export function isModelName(value: string): value is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(value);
}

export function parseModelName(value: string): ModelName {
  if (isModelName(value)) return value;
  throw new ModelUnknownError(value, MODEL_NAMES);
}

export const OPTIMIZER_NAMES = ['adam', 'sgd', 'adadelta'] as const;
export type OptimizerName = (typeof OPTIMIZER_NAMES)[number];

export function parseOptimizerName(value: string): OptimizerName {
  if ((OPTIMIZER_NAMES as readonly string[]).includes(value)) return value as OptimizerName;
  throw new ConfigError(`--optimizer must be one of ${OPTIMIZER_NAMES.join(', ')}, got '${value}'`);
}

/** Default learning rates, chosen so that LeNet-5 reaches 99% on MNIST in a few epochs with each. */
export const DEFAULT_LR: Record<OptimizerName, number> = { adam: 2e-3, sgd: 0.05, adadelta: 1.0 };

/**
 * `--model`: a built-in name, or something that reads as a file path (a separator, or a .js/.mjs/.cjs/.json name).
 * Anything else is an unknown model name (ModelUnknownError lists the known ones); whether the file exists and holds
 * a usable model is checked where it is read (model-spec.ts), on the coordinator or `ringtrain train`.
 */
export function parseModelSpec(value: string): string {
  if (isModelName(value)) return value;
  const pathLike = /[/\\]/.test(value) || /\.(m|c)?js$|\.json$/.test(value);
  if (!pathLike || value.length > 4096) throw new ModelUnknownError(value, [...MODEL_NAMES, 'or a .mjs/.json path']);
  return value;
}
