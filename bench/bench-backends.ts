/**
 * The report's backend comparison: for every backend that loads here (tensorflow, wasm), LeNet-5 and keras-cnn as
 * the single-process trainer, as a 2-worker cluster, and as the machine's ceiling (two unconnected trainers side by
 * side); with PyTorch DDP on the same LeNet-5 job in the same run (bench/pytorch_ddp.py), where torch is installed.
 *
 * Threads: the single trainer uses every core (the default); each of the two cluster workers and of the two ceiling
 * trainers gets cores / 2, at least 1 (what `launch -np 2` gives them), as each PyTorch DDP process gets one thread.
 */
import { execFile, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultMnistDir } from '../shared/data/mnist.js';
import {
  median,
  runCluster,
  runIndependentTrainers,
  runTrainer,
  type RunResult,
  type TrainArgs,
} from './bench-cluster.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const CLI = path.join(HERE, '..', 'scripts', 'ringtrain.js');

export const BENCH_MODELS = ['lenet5', 'keras-cnn'] as const;
export type BenchModel = (typeof BENCH_MODELS)[number];
/** Training samples of each measured run, the same in `npm run bench` and `npm run bench:backends`. */
export const BENCH_TRAIN_LIMIT: Record<BenchModel, number> = { lenet5: 25_600, 'keras-cnn': 6_400 };

export interface BackendModelRow {
  model: BenchModel;
  trainSamples: number;
  /** Median samples/s of training time (evaluation excluded), and every run's. */
  single: number;
  singleRuns: number[];
  cluster: number;
  clusterRuns: number[];
  /** Two unconnected trainers side by side: the sum of their samples/s. */
  ceiling: number;
  ceilingRuns: number[];
  /** cluster / ceiling. */
  ofCeiling: number;
  /** Share of the cluster's training time its step records' phases account for (data+compute+allreduce+apply). */
  phaseShare: number;
  phaseMeanMs?: RunResult['summary']['phaseMeanMs'];
}

export interface BackendRow {
  backend: string;
  /** `--step-graph off`: the tensorflow backend op by op, the before of its compiled step. */
  opByOp?: boolean;
  /** What `ringtrain doctor` says: version, or why it is not available. */
  available: boolean;
  detail: string;
  singleThreads: number;
  clusterThreads: number;
  models: BackendModelRow[];
}

export interface PytorchDdpResult {
  ran: boolean;
  note: string;
  torch?: string;
  samplesPerSec?: number;
  runs?: number[];
  trainSamples?: number;
  /** PyTorch's own ceiling: two single-process PyTorch trainers (1 thread each) side by side, summed. */
  ceiling?: number;
  ceilingRuns?: number[];
}

export interface BackendsSection {
  repeats: number;
  batchSize: number;
  rows: BackendRow[];
  pytorch: PytorchDdpResult;
}

export interface BackendsPlan {
  quick: boolean;
  repeats: number;
  trainLimit: Record<BenchModel, number>;
  testLimit: number;
  /** Models measured (default both; the quick run's shape check takes LeNet-5 only). */
  models?: readonly BenchModel[];
}

interface DoctorBackend {
  backend: string;
  available: boolean;
  version?: string;
  threads?: number;
  note?: string;
}

/** `ringtrain doctor --json` in its own process (loading a backend here would pin this process's tfjs). */
function doctor(): Promise<DoctorBackend[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, 'doctor', '--json'], { timeout: 180_000 }, (err, stdout) => {
      if (err) return reject(err);
      resolve((JSON.parse(stdout) as { backends: DoctorBackend[] }).backends);
    });
  });
}

function phaseShare(r: RunResult): number {
  const p = r.summary.phaseMeanMs;
  const trainMs = 1000 * r.summary.history.reduce((a, h) => a + (h.trainSeconds ?? 0), 0);
  if (!p || trainMs <= 0) return NaN;
  return (r.summary.steps * (p.dataMs + p.computeMs + p.allreduceMs + p.applyMs)) / trainMs;
}

async function measureModel(
  backend: string,
  model: BenchModel,
  plan: BackendsPlan,
  opByOp: boolean,
): Promise<BackendModelRow> {
  const base: TrainArgs = {
    backend,
    model,
    epochs: 1,
    trainLimit: plan.trainLimit[model],
    testLimit: plan.testLimit,
    ...(opByOp ? { stepGraph: 'off' as const } : {}),
  };
  const perWorker: TrainArgs = { ...base, threads: Math.max(1, Math.floor(os.availableParallelism() / 2)) };
  const singles: number[] = [];
  const clusters: RunResult[] = [];
  const ceilings: number[] = [];
  for (let rep = 0; rep < plan.repeats; rep++) {
    singles.push((await runTrainer(base)).summary.samplesPerSec);
    clusters.push(await runCluster(2, perWorker));
    ceilings.push((await runIndependentTrainers(2, perWorker)).samplesPerSec);
  }
  const clusterRuns = clusters.map((c) => c.summary.samplesPerSec);
  const cluster = median(clusterRuns);
  const ceiling = median(ceilings);
  const last = clusters[clusters.length - 1]!;
  return {
    model,
    trainSamples: plan.trainLimit[model],
    single: median(singles),
    singleRuns: singles,
    cluster,
    clusterRuns,
    ceiling,
    ceilingRuns: ceilings,
    ofCeiling: cluster / ceiling,
    phaseShare: median(clusters.map(phaseShare)),
    ...(last.summary.phaseMeanMs ? { phaseMeanMs: last.summary.phaseMeanMs } : {}),
  };
}

/** python3 bench/pytorch_ddp.py; skipped with a note where torch does not import. */
function runDdp(trainLimit: number, workers = 2): Promise<{ samplesPerSec: number; torch: string }> {
  const python = process.env.RINGTRAIN_PYTHON ?? 'python3';
  const script = path.join(REPO, 'bench', 'pytorch_ddp.py');
  const args = [script, '--data-dir', defaultMnistDir(), '--train-limit', String(trainLimit), '--json'];
  args.push('--workers', String(workers));
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{'))
        return resolve(JSON.parse(line) as { samplesPerSec: number; torch: string });
      const why = /No module named 'torch'/.test(out)
        ? 'torch is not installed'
        : `exit ${code}: ${line.slice(0, 200)}`;
      reject(new Error(why));
    });
  });
}

async function measureDdp(plan: BackendsPlan, log: (l: string) => void): Promise<PytorchDdpResult> {
  if (plan.quick) return { ran: false, note: 'not run in quick mode' };
  const runs: number[] = [];
  const ceilings: number[] = [];
  let torch = '';
  const limit = plan.trainLimit.lenet5;
  try {
    for (let rep = 0; rep < plan.repeats; rep++) {
      log(`backends: PyTorch DDP ${rep + 1}/${plan.repeats}, then two single PyTorch trainers side by side`);
      const r = await runDdp(limit);
      runs.push(r.samplesPerSec);
      torch = r.torch;
      const pair = await Promise.all([runDdp(limit, 1), runDdp(limit, 1)]);
      ceilings.push(pair[0].samplesPerSec + pair[1].samplesPerSec);
    }
  } catch (err) {
    const note = `skipped: ${(err as Error).message} (pip install torch==2.13.0, or Debian's python3-torch with RINGTRAIN_PYTHON=/usr/bin/python3)`;
    return { ran: false, note };
  }
  const note = 'gloo, 2 processes, 1 thread each, LeNet-5, Adam, batch 64 per process';
  return {
    ran: true,
    note,
    torch,
    samplesPerSec: median(runs),
    runs,
    trainSamples: limit,
    ceiling: median(ceilings),
    ceilingRuns: ceilings,
  };
}

export async function measureBackends(plan: BackendsPlan, log: (l: string) => void): Promise<BackendsSection> {
  const found = (await doctor()).filter((b) => b.backend !== 'cpu');
  // The tensorflow backend twice: with its compiled step (the default), then op by op (--step-graph off).
  const variants = found.flatMap((b) =>
    b.backend === 'tensorflow'
      ? [
          { b, opByOp: false },
          { b, opByOp: true },
        ]
      : [{ b, opByOp: false }],
  );
  const rows: BackendRow[] = [];
  for (const { b, opByOp } of variants) {
    const row: BackendRow = {
      backend: b.backend,
      ...(opByOp ? { opByOp } : {}),
      available: b.available,
      detail: b.available ? (b.version ?? '') : (b.note ?? 'not available'),
      singleThreads: b.backend === 'tensorflow' ? os.availableParallelism() : 1,
      clusterThreads: b.backend === 'tensorflow' ? Math.max(1, Math.floor(os.availableParallelism() / 2)) : 1,
      models: [],
    };
    if (b.available) {
      for (const model of plan.models ?? BENCH_MODELS) {
        const name = `${b.backend}${opByOp ? ' op by op' : ''}`;
        log(`backends: ${name} ${model} (trainer, cluster of 2, 2 trainers side by side) x ${plan.repeats}`);
        row.models.push(await measureModel(b.backend, model, plan, opByOp));
      }
    }
    rows.push(row);
  }
  return { repeats: plan.repeats, batchSize: 64, rows, pytorch: await measureDdp(plan, log) };
}
