/**
 * Where the native TensorFlow backend lives, and what was pinned. Shared by the set-up (which writes these places)
 * and the loader (which reads them), with no heavy imports, so `doctor` and the loader stay cheap.
 *
 * - The cache (`RINGTRAIN_NATIVE_CACHE`, else `$XDG_CACHE_HOME/ringtrain`, else `~/.cache/ringtrain`) keeps the
 *   downloaded wheel and each finished build, keyed by what it was built from; a fresh clone links a cached build.
 * - The install is `<package root>/node_modules/.ringtrain-native/tfjs-node`: a dot-folder npm leaves alone, inside
 *   node_modules so that `npm ci` (which deletes node_modules) re-provisions it, and so that the built package
 *   resolves `@tensorflow/tfjs` to the project's own copy (one tfjs engine, one kernel registry).
 *   `RINGTRAIN_NATIVE_DIR` points elsewhere.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** What the set-up fetches by default; the hashes are checked before anything is built from the files. */
export const PINNED = {
  tensorflow: '2.21.0',
  /** The official TensorFlow CPU wheel for Linux x86-64 (any Python: only its shared libraries are used). */
  wheel: {
    platform: 'linux-x64',
    requirement: 'tensorflow-cpu==2.21.0',
    file: 'tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl',
    sha256: '2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c',
    pipTarget: ['--platform', 'manylinux_2_27_x86_64', '--python-version', '3.11', '--implementation', 'cp'],
  },
  /** npm tarballs, with the registry's integrity (the lock-file format). */
  tfjsNode: {
    spec: '@tensorflow/tfjs-node@4.22.0',
    version: '4.22.0',
    integrity: 'sha512-uHrXeUlfgkMxTZqHkESSV7zSdKdV0LlsBeblqkuKU9nnfxB1pC6DtoyYVaLxznzZy7WQSegjcohxxCjAf6Dc7w==',
  },
  protobuf: {
    spec: 'google-protobuf@3.21.4',
    integrity: 'sha512-MnG7N936zcKTco4Jd2PX2U96Kf9PxygAPKBug+74LHzmHXmceN16MmRcdgZv+DGef/S9YvQAfRsNCn4cjf9yyQ==',
  },
  /** N-API version the addon is built for (tfjs-node 4.22 lists 3..8); Node 20 provides 9. */
  napi: 8,
} as const;

/** Written next to the installed package once its smoke test passed; the loader refuses an install without it. */
export interface NativeManifest {
  tfjsNode: string;
  /** libtensorflow's own version, as its TF_Version() reported in the smoke test. */
  tensorflow: string;
  /** 'pinned wheel', 'wheel <file>' or 'libtensorflow <dir>'. */
  source: string;
  /** SHA-256 of the wheel, or of libtensorflow's main library for a folder. */
  sha256: string;
  /** Path of the addon relative to the package folder. */
  binding: string;
  builtAt: string;
}

/** Outcome of the last automatic set-up (npm ci), so `doctor` can say why the backend is missing. */
export interface SetupStatus {
  ok: boolean;
  reason?: string;
  at: string;
}

export const MANIFEST_FILE = 'ringtrain-native.json';
const STATUS_FILE = 'last-setup.json';

/** The folder holding package.json of ringtrain itself (this file is dist/shared/tf/native-paths.js). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export function nativeCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RINGTRAIN_NATIVE_CACHE) return path.resolve(env.RINGTRAIN_NATIVE_CACHE);
  const base = env.XDG_CACHE_HOME ? env.XDG_CACHE_HOME : path.join(os.homedir(), '.cache');
  return path.join(base, 'ringtrain');
}

/** The installed tfjs-node package folder. */
export function nativeInstallDir(env: NodeJS.ProcessEnv = process.env, root = packageRoot()): string {
  if (env.RINGTRAIN_NATIVE_DIR) return path.resolve(env.RINGTRAIN_NATIVE_DIR);
  return path.join(root, 'node_modules', '.ringtrain-native', 'tfjs-node');
}

export function readManifest(dir: string): NativeManifest | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8')) as NativeManifest;
  } catch {
    return undefined;
  }
}

export function writeSetupStatus(installDir: string, status: SetupStatus): void {
  try {
    fs.mkdirSync(path.dirname(installDir), { recursive: true });
    fs.writeFileSync(path.join(path.dirname(installDir), STATUS_FILE), JSON.stringify(status) + '\n');
  } catch {
    // Only a hint for `doctor`; a read-only tree must not fail the set-up.
  }
}

export function readSetupStatus(installDir: string): SetupStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(path.dirname(installDir), STATUS_FILE), 'utf8')) as SetupStatus;
  } catch {
    return undefined;
  }
}
