#!/usr/bin/env node
/**
 * Chaos run: a real cluster (a coordinator and 3-4 workers, each a `ringtrain` process) trains under a seeded schedule
 * of faults, then the run is judged from its own records (bench/chaos/checks.ts).
 *
 *   npm run chaos -- --seed 1 --minutes 20 [--faults kill,stop,join,cut,coordinator,hostile] [--out file.json]
 *
 * Faults: SIGKILL of a worker (a replacement joins a few seconds later), SIGSTOP then SIGCONT (short, below the
 * heartbeat window, or long enough to be evicted), a join of an extra worker, every ring link of one worker cut
 * (a TCP proxy sits in front of each ring listener), the coordinator SIGKILLed and restarted with --resume, and
 * hostile clients (the unauthenticated slots filled, a reserved opcode beyond them, a 64 MiB header, non-HTTP bytes)
 * against the coordinator and a ring listener. After each fault the driver waits for training to make progress again
 * (the recovery time), then for a seeded gap. Prints the faults and the checks, writes a summary JSON, and exits 1 if
 * any check failed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { generateToken } from '../../shared/auth.js';
import { createRng, type Rng } from '../../shared/rng.js';
import {
  checkFinished,
  checkHashes,
  checkNoGaps,
  checkNoStepTwice,
  checkProcesses,
  median,
  type CheckResult,
  type StepLine,
} from './checks.js';
import { Cluster, type ProcRecord } from './cluster.js';
import { hostileClients } from './hostile.js';

export const FAULT_KINDS = ['kill', 'stop', 'join', 'cut', 'coordinator', 'hostile'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface ChaosOptions {
  seed: number;
  minutes: number;
  faults: FaultKind[];
  workers: number;
  maxWorkers: number;
  /** Epochs of the run (sized so that training outlasts the fault schedule). */
  epochs: number;
  trainLimit: number;
  testLimit: number;
  targetAccuracy: number;
  recoveryTimeoutMs: number;
  /** After the faults, how long the last run may take to finish. */
  finishTimeoutMs: number;
  dir: string;
  log: (line: string) => void;
}

export interface FaultRecord {
  kind: FaultKind;
  at: number;
  target: string;
  detail: string;
  recovered: boolean;
  recoveryMs: number;
}

export interface ChaosSummary {
  seed: number;
  minutes: number;
  dir: string;
  wallSeconds: number;
  faults: FaultRecord[];
  recovery: Record<string, { count: number; survived: number; medianMs: number; worstMs: number }>;
  checks: CheckResult[];
  failedChecks: number;
  runs: Array<Record<string, unknown>>;
}

/** Follows metrics.jsonl as the coordinators append to it. */
class MetricsTail {
  readonly lines: StepLine[] = [];
  maxStep = -1;
  lastAt = 0;
  private offset = 0;
  private rest = '';
  incarnation = 0;

  constructor(private readonly file: string) {}

  poll(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const text = this.rest + buf.toString('utf8');
      const parts = text.split('\n');
      this.rest = parts.pop() ?? '';
      for (const p of parts) this.add(p);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** A new coordinator incarnation starts here (after the old one's last complete line). */
  nextIncarnation(): void {
    this.poll();
    this.rest = ''; // a line cut off by the SIGKILL
    this.incarnation++;
  }

  private add(text: string): void {
    if (!text.trim()) return;
    try {
      const r = JSON.parse(text) as StepLine;
      this.lines.push({
        rank: r.rank,
        gen: r.gen,
        step: r.step,
        paramHash: r.paramHash,
        incarnation: this.incarnation,
      });
      if (r.step > this.maxStep) this.maxStep = r.step;
      this.lastAt = Date.now();
    } catch {
      // a torn line of a killed coordinator: not a step record
    }
  }
}

/**
 * A 10 s liveness window (1 s heartbeats): wide enough that a loaded machine does not evict healthy workers, and the
 * long SIGSTOPs (12-16 s) still outlast it.
 */
const HEARTBEAT_MISSES = 10;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const pick = <T>(rng: Rng, items: readonly T[]): T => items[rng.nextBelow(items.length)]!;
const between = (rng: Rng, lo: number, hi: number) => lo + rng.nextBelow(hi - lo + 1);

/** What the schedule shares across the runs of one chaos session. */
interface Session {
  rng: Rng;
  t0: number;
  /** When faults stop: set once the first run trains (start-up is not chaos time). */
  end?: number;
}

interface RunResult {
  dir: string;
  faults: FaultRecord[];
  checks: CheckResult[];
  run?: Record<string, unknown>;
}

/** One training run (its own folder and cluster) under the session's schedule. */
class ChaosRun {
  private readonly rng: Rng;
  private readonly cluster: Cluster;
  private readonly metrics: MetricsTail;
  readonly faults: FaultRecord[] = [];
  private readonly t0: number;

  constructor(
    private readonly o: ChaosOptions,
    private readonly session: Session,
    private readonly dir: string,
  ) {
    this.rng = session.rng;
    this.t0 = session.t0;
    fs.mkdirSync(dir, { recursive: true });
    this.cluster = new Cluster({
      dir,
      token: generateToken(),
      coordinatorArgs: [
        '--model',
        'mlp',
        '--train-limit',
        String(o.trainLimit),
        '--test-limit',
        String(o.testLimit),
        '--epochs',
        String(o.epochs),
        '--batch-size',
        '32',
        '--seed',
        String(o.seed),
        '--min-workers',
        '2',
        '--max-workers',
        String(o.maxWorkers),
        '--checkpoint-every',
        '10',
        '--report-every',
        '1',
        '--check-every',
        '10',
        '--summary-json',
        path.join(dir, 'summary.json'),
        '--heartbeat-misses',
        String(HEARTBEAT_MISSES),
        // Longer than the longest SIGSTOP: a worker stopped across the end of the run still learns it ended.
        '--linger-ms',
        '30000',
        '--quiet',
      ],
      workerArgs: ['--backend', 'cpu', '--heartbeat-misses', String(HEARTBEAT_MISSES)],
    });
    this.metrics = new MetricsTail(path.join(dir, 'metrics.jsonl'));
  }

  private elapsed(): string {
    return `${((Date.now() - this.t0) / 1000).toFixed(1).padStart(6)} s`;
  }

  private runOver(): boolean {
    const c = this.cluster.coordinator;
    return !!c?.exit && !c.killedBySchedule;
  }

  /** Wait until a step beyond `step` is recorded; resolves with the time it took, or -1 after the timeout. */
  private async progressBeyond(step: number, since: number): Promise<number> {
    const deadline = Date.now() + this.o.recoveryTimeoutMs;
    while (Date.now() < deadline) {
      this.metrics.poll();
      if (this.metrics.maxStep > step) return Date.now() - since;
      if (this.runOver()) return this.cluster.coordinator!.exit!.code === 0 ? Date.now() - since : -1;
      await sleep(100);
    }
    return -1;
  }

  private workers(): ProcRecord[] {
    return this.cluster.liveWorkers().filter((w) => !w.stopped);
  }

  private hasCheckpoint(): boolean {
    try {
      return fs.readdirSync(path.join(this.dir, 'checkpoints')).some((f) => !f.endsWith('.tmp'));
    } catch {
      return false;
    }
  }

  /** A fault kind that can be injected now (a kill needs a spare worker, a restart a checkpoint). */
  private chooseKind(): FaultKind {
    const live = this.workers().length;
    const possible = this.o.faults.filter((k) => {
      if (k === 'kill' || k === 'stop') return live >= 3;
      if (k === 'join') return live < this.o.maxWorkers;
      if (k === 'coordinator') return this.hasCheckpoint();
      return true;
    });
    if (possible.length === 0) return 'join';
    return pick(this.rng, possible);
  }

  private async inject(kind: FaultKind): Promise<{ target: string; detail: string }> {
    switch (kind) {
      case 'kill': {
        const w = pick(this.rng, this.workers());
        this.cluster.kill(w);
        const delay = between(this.rng, 1_000, 5_000);
        await sleep(delay);
        if (this.runOver()) return { target: w.name, detail: 'SIGKILL; the run ended before a replacement was due' };
        const n = await this.cluster.startWorker();
        return { target: w.name, detail: `SIGKILL, ${n.name} joined ${delay} ms later` };
      }
      case 'stop': {
        const w = pick(this.rng, this.workers());
        const ms = this.rng.next() < 0.5 ? between(this.rng, 500, 2_500) : between(this.rng, 12_000, 16_000);
        this.cluster.stop(w);
        await sleep(ms);
        this.cluster.resume(w);
        return { target: w.name, detail: `SIGSTOP for ${ms} ms, then SIGCONT` };
      }
      case 'join': {
        const n = await this.cluster.startWorker();
        return { target: n.name, detail: 'a new worker joined' };
      }
      case 'cut': {
        const w = pick(this.rng, this.workers());
        const n = w.proxy?.cut() ?? 0;
        return { target: w.name, detail: `${n} ring connection(s) reset` };
      }
      case 'coordinator': {
        const c = this.cluster.coordinator!;
        if (c.exit) return { target: c.name, detail: 'it had ended the run before the fault was due' };
        this.cluster.kill(c);
        await c.exited;
        this.metrics.nextIncarnation();
        const delay = between(this.rng, 500, 3_000);
        await sleep(delay);
        const n = await this.cluster.startCoordinator(true);
        return { target: c.name, detail: `SIGKILL, ${n.name} restarted with --resume after ${delay} ms` };
      }
      case 'hostile': {
        const w = pick(this.rng, this.workers());
        const [coord, ring] = await Promise.all([
          hostileClients('127.0.0.1', this.cluster.coordinatorPort, 64, 1_500),
          hostileClients('127.0.0.2', w.ringPort!, 64, 1_500),
        ]);
        return {
          target: `coordinator and ${w.name}`,
          detail: `${coord.links} hostile links to the coordinator, ${ring.links} to the ring port`,
        };
      }
    }
  }

  async run(): Promise<RunResult> {
    try {
      await this.runSchedule();
    } finally {
      await this.cluster.shutdown();
    }
    return this.summarize();
  }

  private over(): boolean {
    return this.session.end !== undefined && Date.now() >= this.session.end;
  }

  private async runSchedule(): Promise<void> {
    this.o.log(`${this.elapsed()}  run in ${this.dir}`);
    await this.cluster.startCoordinator(false);
    for (let i = 0; i < this.o.workers; i++) await this.cluster.startWorker();
    const first = await this.progressBeyond(-1, Date.now());
    if (first < 0) return this.o.log(`${this.elapsed()}  training never started`);
    this.o.log(`${this.elapsed()}  training started`);
    this.session.end ??= Date.now() + this.o.minutes * 60_000;
    while (!this.over() && !this.runOver()) {
      await sleep(between(this.rng, 2_000, 8_000));
      if (this.over() || this.runOver()) break;
      await this.oneFault();
    }
    await this.finish();
  }

  private async oneFault(): Promise<void> {
    const kind = this.chooseKind();
    this.metrics.poll();
    const step = this.metrics.maxStep;
    const at = Date.now();
    const { target, detail } = await this.inject(kind);
    const recoveryMs = await this.progressBeyond(step, at);
    const rec: FaultRecord = { kind, at: at - this.t0, target, detail, recovered: recoveryMs >= 0, recoveryMs };
    this.faults.push(rec);
    this.o.log(
      `${this.elapsed()}  ${kind.padEnd(11)} ${target}: ${detail}; ` +
        (rec.recovered ? `training went on after ${(recoveryMs / 1000).toFixed(1)} s` : 'NOT RECOVERED'),
    );
  }

  /** Faults over: make sure enough workers run, and wait for the run to end. */
  private async finish(): Promise<void> {
    if (!this.runOver()) this.o.log(`${this.elapsed()}  fault schedule over; waiting for the run to finish`);
    for (const w of this.cluster.liveWorkers()) if (w.stopped) this.cluster.resume(w);
    while (this.workers().length < 2 && !this.runOver()) await this.cluster.startWorker();
    const coord = this.cluster.coordinator!;
    const deadline = Date.now() + this.o.finishTimeoutMs;
    while (!coord.exit && Date.now() < deadline) await sleep(200);
    // Workers get 'stop' when the run ends; give them a moment to exit on their own, then end the stragglers.
    const workersDone = Promise.all(this.cluster.liveWorkers().map((w) => w.exited));
    await Promise.race([workersDone, sleep(30_000)]);
    // A worker started just as the run ended may never have reached it, and retries for a coordinator that is gone.
    for (const w of this.cluster.liveWorkers()) w.tooLate = !this.cluster.joinedRun(w);
    await this.cluster.shutdown();
    this.metrics.poll();
  }

  private summarize(): RunResult {
    const summaryFile = path.join(this.dir, 'summary.json');
    const run = fs.existsSync(summaryFile)
      ? (JSON.parse(fs.readFileSync(summaryFile, 'utf8')) as Record<string, unknown>)
      : undefined;
    const ends = this.cluster.procs.map((p) => ({
      name: p.name,
      killedBySchedule: p.killedBySchedule,
      tooLate: p.tooLate ?? false,
      code: p.exit?.code ?? null,
      signal: p.exit?.signal ?? null,
    }));
    const lines = this.metrics.lines;
    const unrecovered = this.faults.filter((f) => !f.recovered);
    const checks: CheckResult[] = [
      checkFinished(run, this.o.targetAccuracy),
      checkNoStepTwice(lines),
      checkNoGaps(lines, run),
      checkHashes(lines, run),
      checkProcesses(ends),
      {
        name: 'every fault survived (training went on)',
        ok: unrecovered.length === 0,
        detail:
          unrecovered.length === 0
            ? `${this.faults.length} faults, all survived`
            : unrecovered.map((f) => `${f.kind} at ${(f.at / 1000).toFixed(0)} s`).join('; '),
      },
    ];
    return { dir: this.dir, faults: this.faults, checks, run };
  }
}

function recoveryOf(faults: FaultRecord[]): ChaosSummary['recovery'] {
  const recovery: ChaosSummary['recovery'] = {};
  const add = (kind: string, of: FaultRecord[]) => {
    const ms = of.filter((f) => f.recovered).map((f) => f.recoveryMs);
    recovery[kind] = { count: of.length, survived: ms.length, medianMs: median(ms), worstMs: Math.max(0, ...ms) };
  };
  for (const kind of new Set(faults.map((f) => f.kind)))
    add(
      kind,
      faults.filter((f) => f.kind === kind),
    );
  add('all', faults);
  return recovery;
}

/**
 * Runs back to back under one schedule until `minutes` of faults have passed (a run that finishes early is followed
 * by a fresh one, so the chaos time does not depend on how fast this machine trains); the last run then finishes
 * without further faults. A run that fails a check is reported and the schedule goes on with the next one.
 */
export async function runChaos(o: ChaosOptions): Promise<ChaosSummary> {
  const session: Session = { rng: createRng(o.seed), t0: Date.now() };
  o.log(`chaos: seed ${o.seed}, ${o.minutes} min of faults (${o.faults.join(',')}), folder ${o.dir}`);
  const runs: RunResult[] = [];
  do {
    const result = await new ChaosRun(o, session, path.join(o.dir, `run-${runs.length + 1}`)).run();
    runs.push(result);
    if (session.end === undefined) break; // training never started: nothing to go on with
  } while (Date.now() < session.end);
  const faults = runs.flatMap((r) => r.faults);
  const checks = runs.flatMap((r, i) => r.checks.map((c) => ({ ...c, name: `run ${i + 1}: ${c.name}` })));
  if (faults.length === 0) checks.push({ name: 'faults were injected', ok: false, detail: 'none' });
  return {
    seed: o.seed,
    minutes: o.minutes,
    dir: o.dir,
    wallSeconds: (Date.now() - session.t0) / 1000,
    faults,
    recovery: recoveryOf(faults),
    checks,
    failedChecks: checks.filter((c) => !c.ok).length,
    runs: runs.map((r) => ({
      dir: r.dir,
      faults: r.faults.length,
      outcome: r.run?.outcome,
      testAccuracy: r.run?.testAccuracy,
      steps: r.run?.steps,
      wallSeconds: r.run?.wallSeconds,
    })),
  };
}

export function printSummary(s: ChaosSummary, log: (line: string) => void): void {
  log('');
  log(`faults injected: ${s.faults.length}, survived: ${s.faults.filter((f) => f.recovered).length}`);
  log('recovery (fault injected -> training makes progress again):');
  for (const [kind, r] of Object.entries(s.recovery))
    log(
      `  ${kind.padEnd(12)} ${String(r.survived).padStart(3)}/${String(r.count).padEnd(3)} median ${(r.medianMs / 1000).toFixed(1)} s, worst ${(r.worstMs / 1000).toFixed(1)} s`,
    );
  log('checks:');
  for (const c of s.checks) log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  for (const r of s.runs)
    log(
      `run ${String(r.dir)}: ${String(r.outcome)}, ${String(r.steps)} steps, test accuracy ${(100 * Number(r.testAccuracy ?? 0)).toFixed(2)}%, ${String(r.faults)} faults`,
    );
  log(`${s.failedChecks} failed checks; ${s.wallSeconds.toFixed(0)} s wall`);
}

function parseFaults(value: string): FaultKind[] {
  const kinds = value.split(',').map((k) => k.trim());
  for (const k of kinds)
    if (!(FAULT_KINDS as readonly string[]).includes(k))
      throw new Error(`unknown fault '${k}' (known: ${FAULT_KINDS.join(', ')})`);
  return kinds as FaultKind[];
}

async function main(): Promise<void> {
  const cmd = new Command('chaos')
    .option('--seed <n>', 'seed of the fault schedule (and of the run)', Number, 1)
    .option('--minutes <m>', 'how long faults are injected', Number, 3)
    .option('--faults <list>', 'fault kinds to inject', FAULT_KINDS.join(','))
    .option('--workers <n>', 'workers at the start', Number, 3)
    .option('--max-workers <n>', 'most workers at once', Number, 4)
    .option('--epochs <n>', 'epochs of each run (runs follow each other until the minutes are over)', Number, 4)
    .option('--train-limit <n>', 'training samples per epoch', Number, 6000)
    .option('--target-accuracy <a>', 'test accuracy the run must reach', Number, 0.85)
    .option('--test-limit <n>', 'test samples evaluated at each epoch end', Number, 500)
    .option('--finish-timeout-ms <ms>', 'after the faults, the last run must finish within this time', Number, 600_000)
    .option('--recovery-timeout-ms <ms>', 'a fault not recovered from within this time fails', Number, 150_000)
    .option('--dir <dir>', 'run folder (default: a new temporary folder)')
    .option('--out <file>', 'write the chaos summary JSON here (default: <dir>/chaos-summary.json)')
    .parse();
  const opts = cmd.opts<Record<string, string | number | undefined>>();
  const dir = opts.dir ? String(opts.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-chaos-'));
  fs.mkdirSync(dir, { recursive: true });
  const minutes = Number(opts.minutes);
  const summary = await runChaos({
    seed: Number(opts.seed),
    minutes,
    faults: parseFaults(String(opts.faults)),
    workers: Number(opts.workers),
    maxWorkers: Number(opts.maxWorkers),
    epochs: Number(opts.epochs),
    trainLimit: Number(opts.trainLimit),
    testLimit: Number(opts.testLimit),
    targetAccuracy: Number(opts.targetAccuracy),
    recoveryTimeoutMs: Number(opts.recoveryTimeoutMs),
    finishTimeoutMs: Number(opts.finishTimeoutMs),
    dir,
    log: (line) => console.log(line),
  });
  printSummary(summary, (line) => console.log(line));
  const out = opts.out ? String(opts.out) : path.join(dir, 'chaos-summary.json');
  fs.writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`summary: ${out}`);
  process.exitCode = summary.failedChecks === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(2);
  });
}
