#!/usr/bin/env node
/**
 * Step benchmark: training throughput of one process (forward + backward + optimizer update on real MNIST batches),
 * on the selected backend, through the same flat-buffer Replica the trainer and the workers use.
 *
 *   npm run bench:step -- [--model lenet5|keras-cnn|mlp] [--batch-size 64] [--steps 100] [--backend auto] [--profile]
 *
 * `--profile` also times every TensorFlow.js kernel of a few training steps (tf.profile) and lists the kernels by their
 * share of the step: where the backend's time goes.
 */
import * as tf from '@tensorflow/tfjs';
import { Command, Option } from 'commander';
import { loadMnist } from '../shared/data/mnist.js';
import { selectBackend, BACKEND_CHOICES, parseBackendChoice } from '../shared/tf/backend.js';
import { BatchLoader } from '../shared/train/batches.js';
import { buildModel, MODEL_NAMES, parseModelName } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { shardForRank, batchIndices } from '../shared/data/sampler.js';

export interface KernelShare {
  kernel: string;
  calls: number;
  msPerStep: number;
  share: number;
}

export interface StepBenchResult {
  model: string;
  backend: string;
  batchSize: number;
  steps: number;
  samplesPerSec: number;
  msPerStep: number;
  /** With `profileSteps`: kernels by time per step, largest first. */
  kernels?: KernelShare[];
  /** Whether the timed steps ran as one compiled graph (tensorflow): the profile is then of the op-by-op step. */
  compiled?: boolean;
}

/** Time each kernel over `steps` training steps; shares are of the summed kernel time. */
async function profileKernels(step: (s: number) => void, first: number, steps: number): Promise<KernelShare[]> {
  const totals = new Map<string, { ms: number; calls: number }>();
  for (let s = 0; s < steps; s++) {
    const info = await tf.profile(() => step(first + s));
    for (const k of info.kernels) {
      const entry = totals.get(k.name) ?? { ms: 0, calls: 0 };
      entry.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      entry.calls++;
      totals.set(k.name, entry);
    }
  }
  const sum = [...totals.values()].reduce((a, b) => a + b.ms, 0);
  return [...totals]
    .map(([kernel, t]) => ({
      kernel,
      calls: t.calls / steps,
      msPerStep: t.ms / steps,
      share: t.ms / Math.max(1e-9, sum),
    }))
    .sort((a, b) => b.msPerStep - a.msPerStep);
}

export async function benchStep(opts: {
  model: string;
  batchSize: number;
  steps: number;
  warmup: number;
  backend: string;
  profileSteps?: number;
  /** `off`: time the op-by-op step on tensorflow. */
  stepGraph?: 'auto' | 'off';
}): Promise<StepBenchResult> {
  const backend = await selectBackend(parseBackendChoice(opts.backend));
  const data = await loadMnist();
  let compiled = false;
  const replicaOf = (compileStep: boolean): Replica =>
    new Replica(
      buildModel(parseModelName(opts.model), 1),
      { name: 'adam', lr: 1e-3 },
      { compileStep, onCompile: (o) => (compiled ||= o.compiled) },
    );
  let replica = replicaOf(opts.stepGraph !== 'off');
  const loader = new BatchLoader(data.train, opts.batchSize);
  const order = shardForRank({
    datasetSize: data.train.count,
    worldSize: 1,
    rank: 0,
    seed: 1,
    epoch: 0,
    shuffle: true,
  });
  const step = (s: number) => {
    const { gradients } = replica.computeGradients(loader.load(batchIndices(order, s, opts.batchSize)));
    replica.applyGradients(gradients);
  };
  for (let s = 0; s < opts.warmup; s++) step(s);
  const started = performance.now();
  for (let s = 0; s < opts.steps; s++) step(opts.warmup + s);
  const seconds = (performance.now() - started) / 1000;
  if (opts.profileSteps && compiled) {
    // tf.profile sees one session call in a compiled step: profile the same step op by op instead.
    replica.dispose();
    replica = replicaOf(false);
  }
  const kernels = opts.profileSteps
    ? await profileKernels(step, opts.warmup + opts.steps, opts.profileSteps)
    : undefined;
  replica.dispose();
  return {
    model: opts.model,
    backend,
    batchSize: opts.batchSize,
    steps: opts.steps,
    samplesPerSec: (opts.steps * opts.batchSize) / seconds,
    msPerStep: (1000 * seconds) / opts.steps,
    compiled,
    ...(kernels ? { kernels } : {}),
  };
}

async function main(): Promise<void> {
  const cmd = new Command('bench-step')
    .addOption(new Option('--model <name>').choices(MODEL_NAMES).default('lenet5'))
    .option('--batch-size <n>', 'batch size', Number, 64)
    .option('--steps <n>', 'timed steps', Number, 100)
    .option('--warmup <n>', 'untimed steps first', Number, 10)
    .addOption(new Option('--backend <name>').choices(BACKEND_CHOICES).default('auto'))
    .option('--profile [steps]', 'time every kernel over this many extra steps (default 10)')
    .addOption(
      new Option('--step-graph <mode>', 'tensorflow: compiled step (auto) or op by op')
        .choices(['auto', 'off'])
        .default('auto'),
    )
    .option('--json', 'print JSON only', false)
    .parse(process.argv);
  const o = cmd.opts();
  const profileSteps = o.profile === undefined ? undefined : o.profile === true ? 10 : Number(o.profile);
  const r = await benchStep({
    model: o.model,
    batchSize: o.batchSize,
    steps: o.steps,
    warmup: o.warmup,
    backend: o.backend,
    profileSteps,
    stepGraph: o.stepGraph,
  });
  if (o.json) return void process.stdout.write(`${JSON.stringify(r)}\n`);
  process.stdout.write(
    `${r.model} on ${r.backend}${r.compiled ? ' (compiled step)' : ''}, batch ${r.batchSize}: ${r.samplesPerSec.toFixed(0)} samples/s (${r.msPerStep.toFixed(1)} ms/step over ${r.steps} steps)\n`,
  );
  if (r.kernels && r.compiled)
    process.stdout.write('kernels of the same step op by op (tf.profile cannot see into the graph):\n');
  for (const k of r.kernels?.slice(0, 12) ?? []) {
    process.stdout.write(
      `  ${k.kernel.padEnd(24)} ${k.msPerStep.toFixed(2).padStart(7)} ms/step  ${(100 * k.share).toFixed(1).padStart(5)}%  (${k.calls} calls)\n`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
