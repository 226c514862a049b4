/**
 * TensorFlow.js backend selection. `auto` prefers the native `tensorflow` backend (tfjs-node, an optional dependency
 * that cannot install on machines without internet access), and falls back to `wasm`, which gets ringtrain's own
 * convolution gradient kernels. `cpu` is pure JS: a numeric reference for tests, far too slow to train.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendUnavailableError, ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { registerWasmConvGradients } from './wasm-conv-grads.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export type BackendName = Exclude<BackendChoice, 'auto'>;

export function parseBackendChoice(value: string): BackendChoice {
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  throw new ConfigError(`--backend must be one of ${BACKEND_CHOICES.join(', ')}, got '${value}'`);
}

async function loadTensorflow(): Promise<void> {
  // A variable specifier keeps TypeScript from requiring the optional package's types at build time.
  const pkg = '@tensorflow/tfjs-node';
  await import(pkg);
  if (!(await tf.setBackend('tensorflow')))
    throw new Error('tfjs-node loaded but the tensorflow backend did not start');
}

async function loadWasm(): Promise<void> {
  await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not start');
  registerWasmConvGradients();
}

async function loadCpu(): Promise<void> {
  await import('@tensorflow/tfjs-backend-cpu');
  if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not start');
}

const loaders: Record<BackendName, () => Promise<void>> = { tensorflow: loadTensorflow, wasm: loadWasm, cpu: loadCpu };

async function tryLoad(name: BackendName): Promise<void> {
  try {
    await loaders[name]();
    await tf.ready();
  } catch (err) {
    throw new BackendUnavailableError(name, { cause: err });
  }
}

/** Select and initialise a backend; returns the name of the one in use and logs it once. */
export async function selectBackend(choice: BackendChoice, log?: Logger): Promise<BackendName> {
  // Production mode skips tfjs's per-op debug checks and its console banners (we log the backend ourselves).
  tf.enableProdMode();
  if (choice !== 'auto') {
    await tryLoad(choice);
  } else {
    try {
      await tryLoad('tensorflow');
    } catch (err) {
      log?.debug({ err: (err as Error).cause ?? err }, 'tfjs-node not available, falling back to wasm');
      await tryLoad('wasm');
    }
  }
  const active = tf.getBackend() as BackendName;
  log?.info({ backend: active, requested: choice }, 'tensorflow.js backend selected');
  return active;
}
