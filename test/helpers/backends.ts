/**
 * The tfjs backends a numeric test must pass on: `cpu` (the pure-JS reference), `wasm` (always installed) and
 * `tensorflow` where the native set-up was done. RINGTRAIN_REQUIRE_BACKENDS (a comma list; CI sets
 * `tensorflow,wasm`) turns a missing backend into a failure instead of a skip, so CI cannot pass without it.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { loadNativeBackend } from '../../shared/tf/native.js';
import { registerWasmConvGradients } from '../../shared/tf/wasm-conv-grads.js';

export type TestBackend = 'cpu' | 'wasm' | 'tensorflow';

let cache: TestBackend[] | undefined;

/** Every backend that starts here, cpu first. Throws when a required one does not. */
export async function availableBackends(): Promise<TestBackend[]> {
  if (cache) return cache;
  const found: TestBackend[] = ['cpu', 'wasm'];
  let why = '';
  try {
    loadNativeBackend();
    if (await tf.setBackend('tensorflow')) found.push('tensorflow');
  } catch (err) {
    why = String((err as Error).cause ?? err);
  }
  await tf.setBackend('wasm');
  registerWasmConvGradients();
  await tf.setBackend('cpu');
  const required = (process.env.RINGTRAIN_REQUIRE_BACKENDS ?? '').split(',').filter(Boolean);
  const missing = required.filter((b) => !found.includes(b as TestBackend));
  if (missing.length) throw new Error(`required backend(s) ${missing.join(', ')} not available: ${why}`);
  cache = found;
  return found;
}

/** The backends compared against the cpu reference. */
export async function nonReferenceBackends(): Promise<TestBackend[]> {
  return (await availableBackends()).filter((b) => b !== 'cpu');
}
