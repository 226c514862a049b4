#!/usr/bin/env node
/**
 * `npm run bench`: every performance number of ringtrain from one run, side by side, in a Markdown and a JSON report
 * (bench/results/<timestamp>.{md,json}, copied to latest.{md,json}):
 *
 * - scaling: LeNet-5 samples/s of the single-process trainer and of clusters of 1, 2 and 4 workers, with efficiency
 *   against the trainer, and unconnected trainers side by side as the machine's ceiling;
 * - allreduce: time, algbw and busbw (nccl-tests) for 2, 3 and 4 workers from 4 KB to 64 MB, next to the raw ws link;
 * - time to 99.0% test accuracy with 1 and 2 workers (and 2 with fp16 compression);
 * - memory: peak and steady RSS of every process of those runs, and tfjs tensor counts over a long run;
 * - single-process step speed of LeNet-5 and keras-cnn with the kernels that dominate.
 *
 * `--quick` runs everything tiny: the report has the same shape, its numbers mean nothing and no target is judged (CI).
 *
 *   npm run bench [-- --backend auto --repeats 3 --out bench/results]
 *   npm run bench:quick
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { DEFAULT_SEGMENT_BYTES } from '../shared/ring/allreduce.js';
import { TRAIN_DEFAULTS } from '../shared/config.js';
import { benchAllreduce, benchLink, DEFAULT_SIZES, type AllreduceBenchOptions } from './bench-allreduce.js';
import {
  median,
  runCluster,
  runIndependentTrainers,
  runTrainer,
  type ProcessMemory,
  type RunResult,
  type TrainArgs,
} from './bench-cluster.js';
import type { TensorCountResult } from './bench-memory.js';
import {
  evaluateTargets,
  renderMarkdown,
  REPORT_VERSION,
  type AllreduceSection,
  type BenchReport,
  type MemoryRow,
  type MemorySection,
  type ScalingRow,
  type ScalingSection,
  type StepsSection,
  type TimeToAccuracyRow,
  type TimeToAccuracySection,
} from './bench-report.js';
import type { StepBenchResult } from './bench-step.js';
import { BENCH_TRAIN_LIMIT, measureBackends, type BackendsPlan } from './bench-backends.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const MiB = 1024 * 1024;

interface Plan {
  mode: 'full' | 'quick';
  backend: string;
  repeats: number;
  scaling: { trainLimit: number; testLimit: number; workers: number[] };
  allreduce: Omit<AllreduceBenchOptions, 'compression'>;
  tta: { target: number; maxEpochs: number; trainLimit: number; testLimit: number; warmupEpochs: number };
  tensorSteps: number;
  soak: { epochs: number; trainLimit: number };
  steps: { lenet: number; keras: number; profile: number };
  backends: BackendsPlan;
}

function planFor(quick: boolean, backend: string, repeats?: number): Plan {
  if (quick) {
    return {
      mode: 'quick',
      backend,
      repeats: repeats ?? 1,
      scaling: { trainLimit: 640, testLimit: 200, workers: [1, 2, 4] },
      allreduce: {
        workers: [2, 3, 4],
        sizes: [4096, 65536],
        rounds: 1,
        budgetBytes: MiB,
        segmentBytes: DEFAULT_SEGMENT_BYTES,
      },
      tta: { target: 0.5, maxEpochs: 1, trainLimit: 640, testLimit: 200, warmupEpochs: TRAIN_DEFAULTS.warmupEpochs },
      tensorSteps: 12,
      soak: { epochs: 2, trainLimit: 640 },
      steps: { lenet: 3, keras: 2, profile: 1 },
      backends: {
        quick: true,
        repeats: 1,
        trainLimit: { lenet5: 256, 'keras-cnn': 128 },
        testLimit: 100,
        models: ['lenet5'],
      },
    };
  }
  return {
    mode: 'full',
    backend,
    repeats: repeats ?? 3,
    scaling: { trainLimit: 0, testLimit: 1000, workers: [1, 2, 4] },
    allreduce: {
      workers: [2, 3, 4],
      sizes: DEFAULT_SIZES,
      rounds: 3,
      budgetBytes: 256 * MiB,
      segmentBytes: DEFAULT_SEGMENT_BYTES,
    },
    tta: { target: 0.99, maxEpochs: 12, trainLimit: 0, testLimit: 0, warmupEpochs: TRAIN_DEFAULTS.warmupEpochs },
    tensorSteps: 600,
    soak: { epochs: 12, trainLimit: 12_800 },
    steps: { lenet: 200, keras: 40, profile: 5 },
    backends: {
      quick: false,
      repeats: repeats ?? 3,
      trainLimit: BENCH_TRAIN_LIMIT,
      testLimit: 500,
    },
  };
}

/** What `launch -np n` gives each of n local workers: a share of the cores, at least one. */
function threadsFor(processes: number): number {
  return Math.max(1, Math.floor(os.availableParallelism() / processes));
}

function log(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

function row(name: string, processes: number, results: RunResult[], base: number): ScalingRow {
  const runs = results.map((r) => r.summary.samplesPerSec);
  const samplesPerSec = median(runs);
  const speedup = samplesPerSec / base;
  const last = results[results.length - 1]!.summary;
  return {
    name,
    processes,
    samplesPerSec,
    runs,
    speedup,
    efficiency: speedup / processes,
    testAccuracy: last.testAccuracy,
    ...(last.phaseMeanMs ? { phaseMeanMs: last.phaseMeanMs } : {}),
    cpuBusy: busyOf(results[results.length - 1]!.memory),
  };
}

function busyOf(memory: ProcessMemory[]): ScalingRow['cpuBusy'] {
  return memory.map((m) => ({ role: m.role, share: m.cpuMidShare }));
}

/** Trainer, clusters and side-by-side trainers, repetitions interleaved so that a noisy moment hits them alike. */
async function measureScaling(plan: Plan): Promise<{ section: ScalingSection; backend: string }> {
  const args: TrainArgs = {
    backend: plan.backend,
    epochs: 1,
    trainLimit: plan.scaling.trainLimit,
    testLimit: plan.scaling.testLimit,
  };
  const trainer: RunResult[] = [];
  const clusters = new Map<number, RunResult[]>(plan.scaling.workers.map((n) => [n, []]));
  const independent: number[] = [];
  let independentMemory: ProcessMemory[] = [];
  for (let rep = 0; rep < plan.repeats; rep++) {
    log(`scaling ${rep + 1}/${plan.repeats}: trainer`);
    trainer.push(await runTrainer(args));
    for (const n of plan.scaling.workers) {
      log(`scaling ${rep + 1}/${plan.repeats}: cluster of ${n}`);
      clusters.get(n)!.push(await runCluster(n, { ...args, threads: threadsFor(n) }));
    }
    log(`scaling ${rep + 1}/${plan.repeats}: 2 trainers side by side`);
    const pair = await runIndependentTrainers(2, { ...args, threads: threadsFor(2) });
    independent.push(pair.samplesPerSec);
    independentMemory = pair.memory;
  }
  const base = median(trainer.map((r) => r.summary.samplesPerSec));
  const trainRow = row('ringtrain train (single process)', 1, trainer, base);
  const independentRuns = independent;
  const independentRate = median(independentRuns);
  return {
    backend: trainer[0]!.summary.backend,
    section: {
      model: 'lenet5',
      batchSize: 64,
      trainSamples: plan.scaling.trainLimit || 60_000,
      epochs: 1,
      repeats: plan.repeats,
      trainer: trainRow,
      clusters: plan.scaling.workers.map((n) =>
        row(`cluster, ${n} worker${n > 1 ? 's' : ''}`, n, clusters.get(n)!, base),
      ),
      independent: {
        name: '2 x ringtrain train side by side (no communication)',
        processes: 2,
        samplesPerSec: independentRate,
        runs: independentRuns,
        speedup: independentRate / base,
        efficiency: independentRate / base / 2,
        testAccuracy: trainRow.testAccuracy,
        cpuBusy: busyOf(independentMemory),
      },
    },
  };
}

async function measureAllreduce(plan: Plan): Promise<AllreduceSection> {
  const opts: AllreduceBenchOptions = { ...plan.allreduce, compression: 'none' };
  log('allreduce: raw link');
  const link = await benchLink(opts);
  log(`allreduce: ${opts.workers.join(', ')} workers`);
  const rows = await benchAllreduce(opts, link);
  log('allreduce: 2 workers, fp16');
  const fp16Rows = await benchAllreduce({ ...opts, workers: [2], compression: 'fp16' }, link);
  return {
    sizes: opts.sizes,
    rounds: opts.rounds,
    segmentBytes: opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES,
    link,
    rows,
    fp16Rows,
  };
}

interface TtaRun {
  spec: Omit<TimeToAccuracyRow, 'seconds' | 'trainSeconds' | 'epochs' | 'reached' | 'finalAccuracy' | 'history'>;
  result: RunResult;
}

async function measureTimeToAccuracy(plan: Plan): Promise<{ section: TimeToAccuracySection; runs: TtaRun[] }> {
  const t = plan.tta;
  const specs: TtaRun['spec'][] = [
    { name: '1 worker', workers: 1, compression: 'none', scaleLr: false, warmupEpochs: t.warmupEpochs },
    { name: '2 workers', workers: 2, compression: 'none', scaleLr: true, warmupEpochs: t.warmupEpochs },
    { name: '2 workers, fp16', workers: 2, compression: 'fp16', scaleLr: true, warmupEpochs: t.warmupEpochs },
  ];
  const runs: TtaRun[] = [];
  for (const spec of specs) {
    log(`time to accuracy: ${spec.name}`);
    const result = await runCluster(spec.workers, {
      threads: threadsFor(spec.workers),
      backend: plan.backend,
      epochs: t.maxEpochs,
      trainLimit: t.trainLimit,
      testLimit: t.testLimit,
      targetAccuracy: t.target,
      scaleLr: spec.scaleLr,
      warmupEpochs: spec.warmupEpochs,
      compression: spec.compression,
    });
    runs.push({ spec, result });
  }
  const rows = runs.map(({ spec, result }): TimeToAccuracyRow => {
    const s = result.summary;
    return {
      ...spec,
      seconds: s.wallSeconds,
      trainSeconds: s.history.reduce((a, h) => a + (h.trainSeconds ?? 0), 0),
      epochs: s.epochs,
      reached: s.testAccuracy >= t.target,
      finalAccuracy: s.testAccuracy,
      history: s.history,
    };
  });
  return {
    section: {
      target: t.target,
      maxEpochs: t.maxEpochs,
      trainSamples: t.trainLimit || 60_000,
      testSamples: t.testLimit || 10_000,
      rows,
    },
    runs,
  };
}

function memoryRows(run: string, result: RunResult): MemoryRow[] {
  return result.memory.map((m) => ({ ...m, run, growth: m.rssEndMiB / m.rssMidMiB - 1 }));
}

/** A cluster of 2 training many epochs without stopping early, its memory sampled throughout. */
async function measureMemory(plan: Plan, tta: TtaRun[]): Promise<MemorySection> {
  const { epochs, trainLimit } = plan.soak;
  log(`memory: 2 workers, ${epochs} epochs`);
  const soak = await runCluster(2, {
    backend: plan.backend,
    epochs,
    trainLimit,
    testLimit: 1000,
    threads: threadsFor(2),
  });
  log('memory: tensor counts over a long run');
  const tensors = await runScriptJson<TensorCountResult>('bench-memory.js', [
    '--backend',
    plan.backend,
    '--steps',
    String(plan.tensorSteps),
    '--every',
    String(Math.max(1, Math.round(plan.tensorSteps / 6))),
  ]);
  return {
    soak: {
      workers: 2,
      epochs,
      trainSamples: trainLimit,
      stepsPerWorker: soak.summary.steps,
      seconds: soak.summary.wallSeconds,
    },
    processes: memoryRows('long run, 2 workers', soak),
    peaks: tta.flatMap(({ spec, result }) => memoryRows(spec.name, result)),
    tensors,
  };
}

/** Run one of the bench scripts in its own process (a fresh TensorFlow.js) and parse its --json line. */
function runScriptJson<T>(script: string, args: string[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(HERE, script), ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as T);
      } catch (err) {
        reject(new Error(`${script} printed no JSON: ${out.slice(-500)}`, { cause: err }));
      }
    });
  });
}

async function measureSteps(plan: Plan): Promise<StepsSection> {
  const s = plan.steps;
  log('single-process steps: lenet5');
  const lenet5 = await runScriptJson<StepBenchResult>('bench-step.js', [
    '--model',
    'lenet5',
    '--backend',
    plan.backend,
    '--steps',
    String(s.lenet),
    '--profile',
    String(s.profile),
  ]);
  log('single-process steps: keras-cnn (wasm)');
  // The keras-cnn target is about the wasm backend, whatever --backend says.
  const kerasCnn = await runScriptJson<StepBenchResult>('bench-step.js', [
    '--model',
    'keras-cnn',
    '--backend',
    'wasm',
    '--steps',
    String(s.keras),
    '--warmup',
    '3',
    '--profile',
    String(s.profile),
  ]);
  return { lenet5, kerasCnn };
}

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: REPO,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: REPO,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    return dirty ? `${sha} (with uncommitted changes)` : sha;
  } catch {
    return 'unknown';
  }
}

export async function runBench(plan: Plan): Promise<BenchReport> {
  const started = new Date();
  const loadAverageStart = os.loadavg();
  const scaling = await measureScaling(plan);
  const allreduce = await measureAllreduce(plan);
  const tta = await measureTimeToAccuracy(plan);
  const memory = await measureMemory(plan, tta.runs);
  const steps = await measureSteps(plan);
  const backends = await measureBackends(plan.backends, log);
  const finished = new Date();
  const partial: Omit<BenchReport, 'targets'> = {
    version: REPORT_VERSION,
    mode: plan.mode,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: (finished.getTime() - started.getTime()) / 1000,
    machine: {
      cores: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: os.totalmem() / 2 ** 30,
      node: process.versions.node,
      platform: `${os.platform()} ${os.release()}`,
      loadAverageStart,
      loadAverageEnd: os.loadavg(),
    },
    backend: scaling.backend,
    commit: gitCommit(),
    scaling: scaling.section,
    allreduce,
    timeToAccuracy: tta.section,
    memory,
    steps,
    backends,
  };
  return { ...partial, targets: evaluateTargets(partial) };
}

export async function writeReport(report: BenchReport, outDir: string): Promise<{ markdown: string; json: string }> {
  await fs.mkdir(outDir, { recursive: true });
  const stamp = report.startedAt.replace(/[:]/g, '-').replace(/\..+$/, '');
  const base = path.join(outDir, `${stamp}-${report.mode}-${report.machine.cores}cores-${report.backend}`);
  const markdown = renderMarkdown(report);
  const json = `${JSON.stringify(report, null, 2)}\n`;
  for (const [file, text] of [
    [`${base}.md`, markdown],
    [`${base}.json`, json],
    [path.join(outDir, 'latest.md'), markdown],
    [path.join(outDir, 'latest.json'), json],
  ] as const) {
    await fs.writeFile(file, text);
  }
  return { markdown: `${base}.md`, json: `${base}.json` };
}

async function main(): Promise<void> {
  const o = new Command('bench')
    .option('--quick', 'tiny runs with the same report shape; no target is judged (for CI)', false)
    .option('--backend <name>', 'TensorFlow.js backend of the training runs', 'auto')
    .option('--repeats <n>', 'repetitions of the scaling runs (median reported)', Number)
    .option('--out <dir>', 'report folder (default: bench/results; with --quick a temporary folder)')
    .option('--render <json>', 'only write the Markdown of an existing JSON report next to it (after a format change)')
    .parse(process.argv)
    .opts();
  if (typeof o.render === 'string') {
    const markdown = renderMarkdown(JSON.parse(await fs.readFile(o.render, 'utf8')) as BenchReport);
    await fs.writeFile(o.render.replace(/\.json$/, '.md'), markdown);
    return;
  }
  const out =
    typeof o.out === 'string'
      ? o.out
      : o.quick
        ? path.join(os.tmpdir(), 'ringtrain-bench-quick')
        : path.join(REPO, 'bench', 'results');
  const plan = planFor(Boolean(o.quick), String(o.backend), o.repeats);
  const report = await runBench(plan);
  const files = await writeReport(report, path.resolve(out));
  process.stdout.write(
    `${report.targets.map((t) => `${t.met === null ? '-' : t.met ? 'met' : 'NOT MET'}  ${t.description}: ${t.measured}`).join('\n')}\n`,
  );
  process.stdout.write(`report: ${files.markdown}\n        ${files.json}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
