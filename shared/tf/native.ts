/**
 * Loads the native `tensorflow` backend from the package the set-up built (see native-setup.ts): tfjs-node's kernel
 * backend over its N-API addon, linked against libtensorflow from the official TensorFlow wheel.
 *
 * tfjs-node's own entry (dist/index.js) is not used: it locates the addon through @mapbox/node-pre-gyp, registers
 * file:// model routers and a progress-bar callback, and sets the backend as a side effect of the import. This
 * module does the part ringtrain needs, the same way that entry does it: register the kernels, register the backend.
 *
 * Threads: libtensorflow sizes its intra-op and inter-op pools from TF_NUM_INTRAOP_THREADS and
 * TF_NUM_INTEROP_THREADS when its eager context is created (the first time the backend is used), so they are set
 * here, before that, and cannot change later in the process.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { BackendUnavailableError } from '../errors.js';
import { registerNativeKernels, type TypeAttr } from './native-kernels.js';
import { nativeInstallDir, readManifest, readSetupStatus, type NativeManifest } from './native-paths.js';

export interface NativeBackendInfo {
  manifest: NativeManifest;
  dir: string;
  /** libtensorflow's version as the loaded library reports it. */
  tensorflow: string;
  threads: { intra: number; inter: number };
}

interface Binding {
  TF_Version: string;
}
type BackendCtor = new (binding: Binding, packageName: string) => tf.KernelBackend;

let loaded: NativeBackendInfo | undefined;

/** The innermost cause's message: a backend failure wraps the loader's own reason. */
export function rootReason(err: unknown): string {
  let e = err as Error | undefined;
  while (e?.cause) e = e.cause as Error;
  return e?.message ?? String(err);
}

/** Why the native backend is not installed, in one sentence (for errors and `doctor`). */
export function nativeMissingReason(dir = nativeInstallDir()): string {
  const status = readSetupStatus(dir);
  const last = status && !status.ok && status.reason ? `; the last set-up said: ${status.reason}` : '';
  return `not set up in ${dir} (npm ci does it where it can; or run: ringtrain setup-native)${last}`;
}

function positiveInt(value: string | undefined): number | undefined {
  const n = value === undefined ? NaN : Number(value);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/**
 * The thread count a process uses: the argument, else RINGTRAIN_THREADS, else TF_NUM_INTRAOP_THREADS, else all
 * cores (libtensorflow's own default).
 */
export function resolveThreads(threads?: number, env: NodeJS.ProcessEnv = process.env): number {
  if (threads !== undefined && Number.isInteger(threads) && threads > 0) return threads;
  return positiveInt(env.RINGTRAIN_THREADS) ?? positiveInt(env.TF_NUM_INTRAOP_THREADS) ?? os.availableParallelism();
}

function setThreadEnv(threads: number): { intra: number; inter: number } {
  process.env.TF_NUM_INTRAOP_THREADS = String(threads);
  process.env.TF_NUM_INTEROP_THREADS = String(threads);
  // libtensorflow's INFO lines (CPU feature notes) go to stderr, which the progress view shares; keep warnings.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '1';
  // TensorFlow turns its oneDNN kernels on by default only on CPUs it lists (Intel ones with VNNI or AMX); on this
  // AMD EPYC with AVX-512 they train LeNet-5 1.6x faster than the Eigen ones it falls back to. A user's own setting wins.
  process.env.TF_ENABLE_ONEDNN_OPTS ??= '1';
  return { intra: threads, inter: threads };
}

/**
 * Register the `tensorflow` backend with tfjs (idempotent; the thread count of the first call wins, as libtensorflow
 * reads it once). Throws BackendUnavailableError with the reason when it is not installed or does not load.
 */
export function loadNativeBackend(opts: { threads?: number; dir?: string } = {}): NativeBackendInfo {
  if (loaded) return loaded;
  const dir = opts.dir ?? nativeInstallDir();
  const manifest = readManifest(dir);
  const bindingPath = manifest && path.join(dir, manifest.binding);
  if (!manifest || !bindingPath || !fs.existsSync(bindingPath)) {
    throw new BackendUnavailableError('tensorflow', { cause: new Error(nativeMissingReason(dir)) });
  }
  try {
    const threads = setThreadEnv(resolveThreads(opts.threads));
    const req = createRequire(path.join(dir, 'package.json'));
    req('./dist/register_all_kernels.js');
    const { NodeJSKernelBackend, createTensorsTypeOpAttr } = req('./dist/nodejs_kernel_backend.js') as {
      NodeJSKernelBackend: BackendCtor;
      createTensorsTypeOpAttr: TypeAttr;
    };
    registerNativeKernels(createTensorsTypeOpAttr);
    const binding = req(bindingPath) as Binding;
    tf.registerBackend('tensorflow', () => new NodeJSKernelBackend(binding, '@tensorflow/tfjs-node'), 3);
    loaded = { manifest, dir, tensorflow: binding.TF_Version, threads };
    return loaded;
  } catch (err) {
    throw new BackendUnavailableError('tensorflow', { cause: err });
  }
}

/** The loaded native backend's facts, if loadNativeBackend succeeded in this process. */
export function nativeBackendInfo(): NativeBackendInfo | undefined {
  return loaded;
}
