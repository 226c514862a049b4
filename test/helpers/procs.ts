/** Real processes for integration tests: spawn the CLI, wait for output lines and exits with timeouts, clean up. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../scripts/ringtrain.js', import.meta.url));

export interface Proc {
  child: ChildProcess;
  output(): string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited(timeoutMs?: number): Promise<number | null>;
}

const live = new Set<ChildProcess>();

/** The cluster token the test processes share (each test may pass its own). */
export const TEST_TOKEN = 'test-token-0123456789';

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RINGTRAIN_TOKEN: TEST_TOKEN, ...env },
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(pattern);
          if (m) {
            cleanup();
            resolve(m);
          }
        };
        const onExit = () => {
          check();
          cleanup();
          reject(new Error(`process exited before ${pattern}; output:\n${out}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}; output:\n${out}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', onExit);
        };
        listeners.add(check);
        child.once('exit', onExit);
        check();
      });
    },
    exited(timeoutMs = 120_000) {
      return Promise.race([
        exit,
        new Promise<number | null>((_, reject) =>
          setTimeout(
            () => reject(new Error(`process did not exit in ${timeoutMs} ms; output:\n${out}`)),
            timeoutMs,
          ).unref(),
        ),
      ]);
    },
  };
}

/** Kill every process a test started (call from after/afterEach). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export async function tempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `ringtrain-${prefix}-`));
}

export async function readJsonLines<T>(file: string): Promise<T[]> {
  const text = await fs.readFile(file, 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as T);
}

/** Poll a JSON-lines file until `predicate` holds for its lines (a condition, not a fixed sleep). */
export async function waitForLines<T>(
  file: string,
  predicate: (lines: T[]) => boolean,
  timeoutMs = 60_000,
): Promise<T[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = await readJsonLines<T>(file).catch(() => [] as T[]);
    if (predicate(lines)) return lines;
    if (Date.now() > deadline) throw new Error(`timed out waiting on ${file} (${lines.length} lines)`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Poll until `check` resolves truthy. */
export async function waitUntil(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
