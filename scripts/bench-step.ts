#!/usr/bin/env node
/**
 * Step benchmark: training throughput of one process (forward + backward + optimizer update on real MNIST batches),
 * on the selected backend, through the same flat-buffer Replica the trainer and the workers use.
 *
 *   npm run bench:step -- [--model lenet5|keras-cnn|mlp] [--batch-size 64] [--steps 100] [--backend auto]
 */
import { Command, Option } from 'commander';
import { loadMnist } from '../shared/data/mnist.js';
import { selectBackend, BACKEND_CHOICES, parseBackendChoice } from '../shared/tf/backend.js';
import { BatchLoader } from '../shared/train/batches.js';
import { buildModel, MODEL_NAMES, parseModelName } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { shardForRank, batchIndices } from '../shared/sampler.js';

export interface StepBenchResult { model: string; backend: string; batchSize: number; steps: number; samplesPerSec: number; msPerStep: number }

export async function benchStep(opts: { model: string; batchSize: number; steps: number; warmup: number; backend: string }): Promise<StepBenchResult> {
  const backend = await selectBackend(parseBackendChoice(opts.backend));
  const data = await loadMnist();
  const replica = new Replica(buildModel(parseModelName(opts.model), 1), { name: 'adam', lr: 1e-3 });
  const loader = new BatchLoader(data.train, opts.batchSize);
  const order = shardForRank({ datasetSize: data.train.count, worldSize: 1, rank: 0, seed: 1, epoch: 0, shuffle: true });
  const step = (s: number) => {
    const { gradients } = replica.computeGradients(loader.load(batchIndices(order, s, opts.batchSize)));
    replica.applyGradients(gradients);
  };
  for (let s = 0; s < opts.warmup; s++) step(s);
  const started = performance.now();
  for (let s = 0; s < opts.steps; s++) step(opts.warmup + s);
  const seconds = (performance.now() - started) / 1000;
  replica.dispose();
  return { model: opts.model, backend, batchSize: opts.batchSize, steps: opts.steps, samplesPerSec: (opts.steps * opts.batchSize) / seconds, msPerStep: (1000 * seconds) / opts.steps };
}

async function main(): Promise<void> {
  const cmd = new Command('bench-step')
    .addOption(new Option('--model <name>').choices(MODEL_NAMES).default('lenet5'))
    .option('--batch-size <n>', 'batch size', Number, 64)
    .option('--steps <n>', 'timed steps', Number, 100)
    .option('--warmup <n>', 'untimed steps first', Number, 10)
    .addOption(new Option('--backend <name>').choices(BACKEND_CHOICES).default('auto'))
    .option('--json', 'print JSON only', false)
    .parse(process.argv);
  const o = cmd.opts();
  const r = await benchStep({ model: o.model, batchSize: o.batchSize, steps: o.steps, warmup: o.warmup, backend: o.backend });
  if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else process.stdout.write(`${r.model} on ${r.backend}, batch ${r.batchSize}: ${r.samplesPerSec.toFixed(0)} samples/s (${r.msPerStep.toFixed(1)} ms/step over ${r.steps} steps)\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
