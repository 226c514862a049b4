/**
 * Runs for the benchmark report, as real processes exactly as a user starts them: the single-process trainer
 * (`ringtrain train`) and clusters (`ringtrain coordinator` plus N `ringtrain worker`s on localhost, what `ringtrain
 * launch -np N` starts). While a run lasts, the resident memory of every process is sampled from /proc, so the report
 * can show peak RSS and whether memory stays flat over a long run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuShare, resolveCpuBinding } from '../launcher/cpu-binding.js';
import { generateToken, TOKEN_ENV } from '../shared/auth.js';
import { allowedCpus } from '../shared/cpus.js';

const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));

export interface EpochPoint {
  epoch: number;
  testAccuracy: number;
  seconds?: number;
  trainSeconds?: number;
}

/** What a run's --summary-json holds that the report uses (trainer and cluster summaries share these fields). */
export interface RunSummary {
  backend: string;
  epochs: number;
  steps: number;
  testAccuracy: number;
  samplesPerSec: number;
  wallSeconds: number;
  history: EpochPoint[];
  phaseMeanMs?: { dataMs: number; computeMs: number; allreduceMs: number; applyMs: number };
  outcome?: string;
  error?: string;
}

/** One process's memory over a run: RSS samples (MiB) and the kernel's peak (VmHWM). */
export interface ProcessMemory {
  role: 'trainer' | 'coordinator' | 'worker';
  peakRssMiB: number;
  /**
   * The highest RSS sampled in the second and in the last quarter of the run (the first quarter is start-up). Peaks,
   * not medians: V8's heap saws up and down between collections, and a leak lifts the top of the saw.
   */
  rssMidMiB: number;
  rssEndMiB: number;
  samples: number;
  /** CPU time the process used (user + system), at the last sample. */
  cpuSeconds: number;
  /**
   * The share of one core the process used over the middle half of its samples (past start-up, before the end):
   * 1 = a core busy all the time. Tells a run that waits from one the machine cannot feed.
   */
  cpuMidShare: number;
}

export interface RunResult {
  summary: RunSummary;
  memory: ProcessMemory[];
}

export interface TrainArgs {
  model?: string;
  backend: string;
  batchSize?: number;
  epochs: number;
  trainLimit?: number;
  testLimit?: number;
  targetAccuracy?: number;
  scaleLr?: boolean;
  warmupEpochs?: number;
  compression?: 'none' | 'fp16';
  lr?: number;
  seed?: number;
  /** Compute threads of each training process (RINGTRAIN_THREADS); default: every core. */
  threads?: number;
  /** `--step-graph` of the trainer and the workers; default: theirs (auto). */
  stepGraph?: 'auto' | 'off';
}

/** Where the trainer and the workers compute: the backend, and how its step runs. */
function computeFlags(a: TrainArgs): string[] {
  return ['--backend', a.backend, ...(a.stepGraph ? ['--step-graph', a.stepGraph] : [])];
}

function threadEnv(a: TrainArgs, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return a.threads ? { ...env, RINGTRAIN_THREADS: String(a.threads) } : env;
}

/** Training options of the trainer and the coordinator (the backend goes to the trainer and the workers). */
function trainFlags(a: TrainArgs): string[] {
  const flags = [
    '--epochs',
    String(a.epochs),
    '--model',
    a.model ?? 'lenet5',
    '--batch-size',
    String(a.batchSize ?? 64),
  ];
  if (a.trainLimit) flags.push('--train-limit', String(a.trainLimit));
  if (a.testLimit) flags.push('--test-limit', String(a.testLimit));
  if (a.targetAccuracy) flags.push('--target-accuracy', String(a.targetAccuracy));
  if (a.scaleLr) flags.push('--scale-lr');
  if (a.warmupEpochs !== undefined) flags.push('--warmup-epochs', String(a.warmupEpochs));
  if (a.lr !== undefined) flags.push('--lr', String(a.lr));
  if (a.seed !== undefined) flags.push('--seed', String(a.seed));
  return flags;
}

/** Reads VmRSS and VmHWM of a set of processes every `everyMs`. */
class MemorySampler {
  private readonly rss = new Map<number, number[]>();
  private readonly peak = new Map<number, number>();
  private readonly cpu = new Map<number, Array<{ at: number; seconds: number }>>();
  private static readonly TICKS_PER_SECOND = 100;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly procs: Array<{ pid: number; role: ProcessMemory['role'] }>,
    everyMs = 250,
  ) {
    this.timer = setInterval(() => void this.sample(), everyMs);
    void this.sample();
  }

  private async sample(): Promise<void> {
    await Promise.all(
      this.procs.map(async ({ pid }) => {
        const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
        const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
        const rss = kib('VmRSS');
        const hwm = kib('VmHWM');
        if (Number.isFinite(rss)) (this.rss.get(pid) ?? this.rss.set(pid, []).get(pid)!).push(rss / 1024);
        if (Number.isFinite(hwm)) this.peak.set(pid, Math.max(this.peak.get(pid) ?? 0, hwm / 1024));
        // /proc/PID/stat: utime and stime are fields 14 and 15, counted after the parenthesised command name.
        const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ticks = Number(fields[11]) + Number(fields[12]);
        if (Number.isFinite(ticks))
          (this.cpu.get(pid) ?? this.cpu.set(pid, []).get(pid)!).push({
            at: performance.now(),
            seconds: ticks / MemorySampler.TICKS_PER_SECOND,
          });
      }),
    );
  }

  stop(): ProcessMemory[] {
    clearInterval(this.timer);
    return this.procs.map(({ pid, role }) => {
      const series = this.rss.get(pid) ?? [];
      const quarter = (q: number) => {
        const part = series.slice(Math.floor((q * series.length) / 4), Math.floor(((q + 1) * series.length) / 4));
        return part.length > 0 ? Math.max(...part) : NaN;
      };
      const cpu = this.cpu.get(pid) ?? [];
      return {
        role,
        peakRssMiB: this.peak.get(pid) ?? NaN,
        rssMidMiB: quarter(1),
        rssEndMiB: quarter(3),
        samples: series.length,
        cpuSeconds: cpu.at(-1)?.seconds ?? NaN,
        cpuMidShare: midShare(cpu),
      };
    });
  }
}

/** CPU seconds per wall second between the samples a quarter and three quarters of the way through. */
function midShare(cpu: Array<{ at: number; seconds: number }>): number {
  const from = cpu[Math.floor(cpu.length / 4)];
  const to = cpu[Math.floor((3 * cpu.length) / 4)];
  if (!from || !to || to.at <= from.at) return NaN;
  return (to.seconds - from.seconds) / ((to.at - from.at) / 1000);
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function spawnCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  ipc = false,
  cpus = '',
): { child: ChildProcess; output: () => string } {
  // taskset execs node in its own process: the pid, which the memory sampler watches, stays the worker's.
  const [command, ...rest] = cpus ? ['taskset', '-c', cpus, process.execPath] : [process.execPath];
  const child = spawn(command!, [...rest, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc' as const] : [])],
    env,
  });
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return { child, output: () => out };
}

function exited(child: ChildProcess, what: string, output: () => string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${what} did not finish within ${timeoutMs} ms:\n${output()}`)),
      timeoutMs,
    );
    const done = (code: number | null) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${what} exited with ${code}:\n${output()}`));
    };
    if (child.exitCode !== null) done(child.exitCode);
    else child.once('exit', done);
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves once `file` exists and holds complete JSON. */
async function fileAppears(file: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    if (text.trimEnd().endsWith('}')) return;
    await sleep(100);
  }
  throw new Error(`${file} did not appear within ${timeoutMs} ms`);
}

async function readSummary(file: string): Promise<RunSummary> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as RunSummary;
}

/** `ringtrain train`, the single-process baseline. */
export async function runTrainer(args: TrainArgs, timeoutMs = 30 * 60_000): Promise<RunResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-bench-'));
  try {
    const file = path.join(dir, 'summary.json');
    const p = spawnCli(
      [
        'train',
        ...trainFlags(args),
        ...computeFlags(args),
        '--no-save',
        '--quiet',
        '--run-dir',
        dir,
        '--summary-json',
        file,
      ],
      threadEnv(args),
    );
    const sampler = new MemorySampler([{ pid: p.child.pid!, role: 'trainer' }]);
    try {
      await exited(p.child, 'ringtrain train', p.output, timeoutMs);
    } finally {
      p.child.kill('SIGKILL');
    }
    return { summary: await readSummary(file), memory: sampler.stop() };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The port a coordinator started with an IPC channel reports once it listens. */
function listeningPort(coordinator: ReturnType<typeof spawnCli>): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    coordinator.child.on('message', (m: { type?: string; port?: number }) => {
      if (m?.type === 'listening' && typeof m.port === 'number') resolve(m.port);
    });
    coordinator.child.once('exit', (code) =>
      reject(new Error(`the coordinator exited (${code}) before it listened:\n${coordinator.output()}`)),
    );
  });
}

function spawnWorker(
  port: number,
  train: TrainArgs,
  env: NodeJS.ProcessEnv,
  cpus: string,
): ReturnType<typeof spawnCli> {
  const args = ['--coordinator', `ws://127.0.0.1:${port}`, '--listen', '127.0.0.1:0', '--advertise', '127.0.0.1'];
  return spawnCli(['worker', ...args, ...computeFlags(train)], env, false, cpus);
}

/** The CPUs of each of `workers` local workers as `launch --cpu-binding auto` pins them ('' = not pinned). */
function workerCpus(workers: number, backend: string): string[] {
  const allowed = allowedCpus() ?? '';
  const pin =
    resolveCpuBinding('auto', backend) === 'cpus' && spawnSync('taskset', ['-p', String(process.pid)]).status === 0;
  return Array.from({ length: workers }, (_, i) => (pin && allowed ? cpuShare(allowed, i, workers) : ''));
}

/** A coordinator and `workers` worker processes on localhost, as `ringtrain launch -np N` starts them. */
export async function runCluster(workers: number, args: TrainArgs, timeoutMs = 30 * 60_000): Promise<RunResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-bench-'));
  const env = threadEnv(args, { ...process.env, [TOKEN_ENV]: generateToken() });
  const file = path.join(dir, 'summary.json');
  const coordinatorArgs = [
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--min-workers',
    String(workers),
    '--run-dir',
    dir,
    '--summary-json',
    file,
    '--quiet',
    '--check-every',
    '0',
    '--compression',
    args.compression ?? 'none',
    ...trainFlags(args),
  ];
  const coordinator = spawnCli(coordinatorArgs, env, true);
  const procs = [coordinator];
  try {
    const port = await listeningPort(coordinator);
    const cpus = workerCpus(workers, args.backend);
    for (let i = 0; i < workers; i++) procs.push(spawnWorker(port, args, env, cpus[i]!));
    const sampler = new MemorySampler(
      procs.map((p, i) => ({ pid: p.child.pid!, role: i === 0 ? 'coordinator' : 'worker' })),
    );
    try {
      // The run is over once the coordinator wrote its summary; the processes' own shutdown is not part of it.
      await Promise.race([
        exited(coordinator.child, `cluster of ${workers}`, coordinator.output, timeoutMs),
        fileAppears(file, timeoutMs),
      ]);
      await Promise.race([
        Promise.all(
          procs.map(
            (p) =>
              new Promise((resolve) => (p.child.exitCode !== null ? resolve(null) : p.child.once('exit', resolve))),
          ),
        ),
        sleep(1000),
      ]);
    } finally {
      for (const p of procs) p.child.kill('SIGKILL');
    }
    return { summary: await readSummary(file), memory: sampler.stop() };
  } finally {
    for (const p of procs) p.child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * `count` single-process trainers at the same time, not connected in any way: the most any data-parallel scheme can
 * get out of this machine (they compete for nothing but the machine itself). Returns their summed samples/s.
 */
export async function runIndependentTrainers(
  count: number,
  args: TrainArgs,
): Promise<{ samplesPerSec: number; each: number[]; memory: ProcessMemory[] }> {
  const results = await Promise.all(Array.from({ length: count }, () => runTrainer(args)));
  const each = results.map((r) => r.summary.samplesPerSec);
  return { samplesPerSec: each.reduce((a, b) => a + b, 0), each, memory: results.flatMap((r) => r.memory) };
}
