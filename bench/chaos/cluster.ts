/**
 * The chaos run's cluster: a coordinator on a fixed port (so a restarted one is found again) and workers whose ring
 * listeners sit behind a TCP proxy each (the worker listens on 127.0.0.2:P and advertises 127.0.0.1:P, where the
 * proxy listens). Every process is a real `ringtrain` process; the cluster remembers how each one ended and whether
 * the schedule killed it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProxy, type RingProxy } from './proxy.js';

const CLI = fileURLToPath(new URL('../../scripts/ringtrain.js', import.meta.url));

export interface ProcRecord {
  name: string;
  role: 'coordinator' | 'worker';
  child: ChildProcess;
  startedAt: number;
  /** Set when the schedule killed it (SIGKILL), so its death is not a failure. */
  killedBySchedule: boolean;
  /** A worker that never joined the run (see joinedRun), ended by the driver. */
  tooLate?: boolean;
  stopped: boolean;
  exit?: { code: number | null; signal: NodeJS.Signals | null; at: number };
  exited: Promise<void>;
  proxy?: RingProxy;
  ringPort?: number;
}

export interface ClusterOptions {
  dir: string;
  token: string;
  coordinatorArgs: string[];
  workerArgs: string[];
}

/** A free TCP port on `host` (bound, then released). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export class Cluster {
  readonly procs: ProcRecord[] = [];
  coordinatorPort = 0;
  private workerSeq = 0;
  private coordinatorSeq = 0;

  constructor(private readonly opts: ClusterOptions) {}

  get coordinator(): ProcRecord | undefined {
    return this.procs.filter((p) => p.role === 'coordinator').at(-1);
  }

  /** Workers whose process is running (stopped ones included). */
  /** Whether a worker's log says it joined the run. */
  joinedRun(rec: ProcRecord): boolean {
    try {
      return fs.readFileSync(path.join(this.opts.dir, `${rec.name}.log.jsonl`), 'utf8').includes('"joined the run"');
    } catch {
      return false;
    }
  }

  liveWorkers(): ProcRecord[] {
    return this.procs.filter((p) => p.role === 'worker' && !p.exit);
  }

  private spawn(name: string, role: ProcRecord['role'], args: string[]): ProcRecord {
    const out = fs.openSync(path.join(this.opts.dir, `${name}.out`), 'a');
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', out, out],
      env: { ...process.env, RINGTRAIN_TOKEN: this.opts.token },
    });
    fs.closeSync(out);
    const rec: ProcRecord = {
      name,
      role,
      child,
      startedAt: Date.now(),
      killedBySchedule: false,
      stopped: false,
      exited: new Promise((resolve) =>
        child.once('exit', (code, signal) => {
          rec.exit = { code, signal, at: Date.now() };
          void rec.proxy?.close();
          resolve();
        }),
      ),
    };
    this.procs.push(rec);
    return rec;
  }

  async startCoordinator(resume: boolean): Promise<ProcRecord> {
    if (this.coordinatorPort === 0) this.coordinatorPort = await freePort();
    const args = ['coordinator', '--host', '127.0.0.1', '--port', String(this.coordinatorPort)];
    args.push('--run-dir', this.opts.dir, '--dashboard-port', '0', ...this.opts.coordinatorArgs);
    if (resume) args.push('--resume');
    const rec = this.spawn(`coordinator-${this.coordinatorSeq++}`, 'coordinator', args);
    await waitForListening(this.coordinatorPort, rec);
    return rec;
  }

  async startWorker(): Promise<ProcRecord> {
    const port = await freePort('127.0.0.2');
    const proxy = await startProxy('127.0.0.1', port, '127.0.0.2');
    const name = `worker-${this.workerSeq++}`;
    const rec = this.spawn(name, 'worker', [
      'worker',
      '--coordinator',
      `ws://127.0.0.1:${this.coordinatorPort}`,
      '--listen',
      `127.0.0.2:${port}`,
      '--advertise',
      '127.0.0.1',
      '--run-dir',
      this.opts.dir,
      '--name',
      name,
      ...this.opts.workerArgs,
    ]);
    rec.proxy = proxy;
    rec.ringPort = port;
    return rec;
  }

  kill(rec: ProcRecord): void {
    rec.killedBySchedule = true;
    if (rec.stopped) rec.child.kill('SIGCONT');
    rec.child.kill('SIGKILL');
  }

  stop(rec: ProcRecord): void {
    rec.stopped = true;
    rec.child.kill('SIGSTOP');
  }

  resume(rec: ProcRecord): void {
    rec.stopped = false;
    rec.child.kill('SIGCONT');
  }

  /** End everything still running (after the run, or on an error). */
  async shutdown(): Promise<void> {
    for (const p of this.procs)
      if (!p.exit) {
        p.killedBySchedule ||= false;
        if (p.stopped) p.child.kill('SIGCONT');
        p.child.kill('SIGKILL');
      }
    await Promise.all(this.procs.map((p) => p.exited));
  }
}

/** Poll until the coordinator's port accepts TCP connections (or the process dies). */
async function waitForListening(port: number, rec: ProcRecord, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (rec.exit) throw new Error(`${rec.name} exited (${rec.exit.code ?? rec.exit.signal}) before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${rec.name} did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
