/**
 * TensorFlow.js backend selection. `auto` prefers the native `tensorflow` backend (tfjs-node's addon on libtensorflow,
 * built by the set-up that `npm ci` runs: native-setup.ts), and falls back to `wasm`, which gets ringtrain's own
 * convolution gradient kernels. `cpu` is pure JS: a numeric reference for tests, far too slow to train.
 */
import * as tf from '@tensorflow/tfjs';
import { allowedCpus } from '../cpus.js';
import { BackendUnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { loadNativeBackend, nativeBackendInfo, resolveThreads, rootReason } from './native.js';
import { registerWasmConvGradients } from './wasm-conv-grads.js';

import type { BackendChoice, BackendName } from './names.js';

export { BACKEND_CHOICES, parseBackendChoice, type BackendChoice, type BackendName } from './names.js';

async function loadTensorflow(threads?: number): Promise<void> {
  loadNativeBackend({ threads });
  if (!(await tf.setBackend('tensorflow'))) throw new Error('the native tensorflow backend did not start');
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

const loaders: Record<BackendName, (threads?: number) => Promise<void>> = {
  tensorflow: loadTensorflow,
  wasm: loadWasm,
  cpu: loadCpu,
};

async function tryLoad(name: BackendName, threads?: number): Promise<void> {
  try {
    await loaders[name](threads);
    await tf.ready();
  } catch (err) {
    throw new BackendUnavailableError(name, { cause: err });
  }
}

export interface BackendOptions {
  /**
   * Compute threads of this process (libtensorflow's intra- and inter-op pools); default RINGTRAIN_THREADS, else
   * all cores. wasm and cpu run on one thread whatever this says.
   */
  threads?: number;
}

/** Threads the active backend computes with. */
export function backendThreads(name: BackendName, threads?: number): number {
  return name === 'tensorflow' ? (nativeBackendInfo()?.threads.intra ?? resolveThreads(threads)) : 1;
}

/** Select and initialise a backend; returns the name of the one in use and logs it, with its threads, once. */
export async function selectBackend(
  choice: BackendChoice,
  log?: Logger,
  opts: BackendOptions = {},
): Promise<BackendName> {
  // Production mode skips tfjs's per-op debug checks and its console banners (we log the backend ourselves).
  tf.enableProdMode();
  if (choice !== 'auto') {
    await tryLoad(choice, opts.threads);
  } else {
    try {
      await tryLoad('tensorflow', opts.threads);
    } catch (err) {
      log?.info({ reason: rootReason(err) }, 'native tensorflow backend unavailable; using wasm');
      await tryLoad('wasm');
    }
  }
  const active = tf.getBackend() as BackendName;
  const threads = backendThreads(active, opts.threads);
  log?.info({ backend: active, requested: choice, threads, cpus: allowedCpus() }, 'tensorflow.js backend selected');
  return active;
}
