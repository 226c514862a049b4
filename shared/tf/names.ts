/** The TensorFlow.js backend choices, without TensorFlow.js (the option tables need only the names). */
import { ConfigError } from '../errors.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export type BackendName = Exclude<BackendChoice, 'auto'>;

export function parseBackendChoice(value: string): BackendChoice {
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  throw new ConfigError(`--backend must be one of ${BACKEND_CHOICES.join(', ')}, got '${value}'`);
}
