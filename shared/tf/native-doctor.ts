/**
 * `ringtrain doctor`: for every backend, whether it loads here, its version and threads, and why not. Each backend is
 * loaded for real in this process (the way a worker loads it), and one op is run on it.
 */
import * as tf from '@tensorflow/tfjs';
import { BACKEND_CHOICES, selectBackend, backendThreads, type BackendName } from './backend.js';
import { nativeBackendInfo, rootReason } from './native.js';
import { nativeCacheDir, nativeInstallDir } from './native-paths.js';

export interface BackendReport {
  backend: BackendName;
  available: boolean;
  version?: string;
  threads?: number;
  /** Why it is not available (the loader's reason), or a note about it. */
  note?: string;
}

export interface DoctorReport {
  backends: BackendReport[];
  /** What `--backend auto` selects here. */
  auto: BackendName;
  installDir: string;
  cacheDir: string;
}

async function versionOf(name: BackendName): Promise<string> {
  if (name === 'tensorflow') {
    const info = nativeBackendInfo();
    const onednn = process.env.TF_ENABLE_ONEDNN_OPTS === '0' ? 'off' : 'on';
    return `libtensorflow ${info?.tensorflow ?? '?'} (tfjs-node ${info?.manifest.tfjsNode ?? '?'}, ${info?.manifest.source ?? '?'}, oneDNN ${onednn})`;
  }
  if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    return `tfjs-backend-wasm ${wasm.version_wasm}${simd ? ' (SIMD)' : ''}`;
  }
  return `tfjs-backend-cpu ${tf.version_core} (pure JavaScript, a numeric reference)`;
}

async function probe(name: BackendName, threads?: number): Promise<BackendReport> {
  try {
    await selectBackend(name, undefined, { threads });
    const sum = tf.tidy(() => tf.add(tf.tensor1d([1, 2]), tf.tensor1d([3, 4])).dataSync());
    if (sum[0] !== 4 || sum[1] !== 6) throw new Error(`1+3, 2+4 gave ${Array.from(sum).join(', ')}`);
    return { backend: name, available: true, version: await versionOf(name), threads: backendThreads(name, threads) };
  } catch (err) {
    return { backend: name, available: false, note: rootReason(err) };
  }
}

export async function runDoctor(opts: { threads?: number } = {}): Promise<DoctorReport> {
  const names = BACKEND_CHOICES.filter((c): c is BackendName => c !== 'auto');
  const backends: BackendReport[] = [];
  for (const name of names) backends.push(await probe(name, opts.threads));
  const auto = backends[0]!.available ? 'tensorflow' : 'wasm';
  return { backends, auto, installDir: nativeInstallDir(), cacheDir: nativeCacheDir() };
}

export function formatDoctor(report: DoctorReport): string {
  const lines = report.backends.map((b) => {
    const head = `${b.backend.padEnd(11)}${b.available ? 'available' : 'not available'}`;
    return b.available ? `${head}  ${b.version}, ${b.threads} thread(s)` : `${head}: ${b.note}`;
  });
  lines.push(`--backend auto selects: ${report.auto}`);
  lines.push(`native install: ${report.installDir}`, `native cache:   ${report.cacheDir}`);
  return lines.join('\n') + '\n';
}
