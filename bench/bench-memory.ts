#!/usr/bin/env node
/**
 * Tensor-count benchmark: two replicas in one process train on an in-memory ring of 2 with the workers' own step
 * (worker/epoch-runner.ts trainStep: batch -> gradients -> ring allreduce -> apply), with the periodic parameter hash
 * and an evaluation every `evalEvery` steps, for many steps. It samples tf.memory() (tensors and bytes held by
 * TensorFlow.js) and the JS heap along the way: a leak in the training step shows as a count that grows.
 *
 *   node dist/bench/bench-memory.js [--steps 1000] [--every 100] [--backend auto] [--json]
 */
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { createInMemoryRing } from '../shared/ring/allreduce-memory.js';
import { loadMnist } from '../shared/data/mnist.js';
import { batchIndices, shardForRank, stepsPerEpoch } from '../shared/data/sampler.js';
import { parseBackendChoice, selectBackend } from '../shared/tf/backend.js';
import { BatchLoader, evaluateRange } from '../shared/train/batches.js';
import { buildModel, parseModelName } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { paramHash, trainStep } from '../worker/epoch-runner.js';

export interface TensorSample {
  step: number;
  numTensors: number;
  numBytes: number;
  heapUsedMiB: number;
}

export interface TensorCountResult {
  backend: string;
  model: string;
  steps: number;
  samples: TensorSample[];
  /** Tensors held after the first sample and at the end: equal when nothing leaks. */
  tensorsStart: number;
  tensorsEnd: number;
  flat: boolean;
}

function memorySample(step: number): TensorSample {
  const m = tf.memory();
  return {
    step,
    numTensors: m.numTensors,
    numBytes: m.numBytes,
    heapUsedMiB: process.memoryUsage().heapUsed / 2 ** 20,
  };
}

export async function benchTensorCounts(opts: {
  steps: number;
  every: number;
  evalEvery: number;
  backend: string;
  model: string;
}): Promise<TensorCountResult> {
  const backend = await selectBackend(parseBackendChoice(opts.backend));
  const data = await loadMnist();
  const worldSize = 2;
  const links = createInMemoryRing(worldSize);
  const batchSize = 64;
  const workers = Array.from({ length: worldSize }, (_, rank) => ({
    replica: new Replica(buildModel(parseModelName(opts.model), 42), { name: 'adam', lr: 2e-3 }),
    loader: new BatchLoader(data.train, batchSize),
    ring: { rank, worldSize, gen: 1, links: links[rank]! },
  }));
  workers[1]!.replica.setWeights(workers[0]!.replica.getWeights());
  const samples: TensorSample[] = [];
  const sample = (step: number) => samples.push(memorySample(step));
  let epoch = 0;
  let orders = workers.map((w) =>
    shardForRank({ datasetSize: data.train.count, worldSize, rank: w.ring.rank, seed: 42, epoch, shuffle: true }),
  );
  let perEpoch = stepsPerEpoch(orders[0]!.length, batchSize);
  for (let step = 0, inEpoch = 0; step < opts.steps; step++, inEpoch++) {
    if (inEpoch === perEpoch) {
      epoch++;
      inEpoch = 0;
      orders = workers.map((w) =>
        shardForRank({ datasetSize: data.train.count, worldSize, rank: w.ring.rank, seed: 42, epoch, shuffle: true }),
      );
      perEpoch = stepsPerEpoch(orders[0]!.length, batchSize);
    }
    await Promise.all(
      workers.map((w, r) =>
        trainStep(w.replica, w.loader, batchIndices(orders[r]!, inEpoch, batchSize), w.ring, step, epoch),
      ),
    );
    if (step % 100 === 0) for (const w of workers) paramHash(w.replica);
    if (opts.evalEvery > 0 && step % opts.evalEvery === opts.evalEvery - 1)
      for (const w of workers) evaluateRange(w.replica, data.test, 0, 500);
    if (step % opts.every === opts.every - 1 || step === opts.steps - 1) sample(step + 1);
  }
  for (const w of workers) w.replica.dispose();
  const tensorsStart = samples[0]?.numTensors ?? 0;
  const tensorsEnd = samples[samples.length - 1]?.numTensors ?? 0;
  return {
    backend,
    model: opts.model,
    steps: opts.steps,
    samples,
    tensorsStart,
    tensorsEnd,
    flat: samples.every((s) => s.numTensors === tensorsStart),
  };
}

async function main(): Promise<void> {
  const o = new Command('bench-memory')
    .option('--steps <n>', 'training steps (of both replicas)', Number, 1000)
    .option('--every <n>', 'sample tf.memory() every N steps', Number, 100)
    .option('--eval-every <n>', 'evaluate 500 test samples every N steps (0 = never)', Number, 250)
    .option('--model <name>', 'model', 'lenet5')
    .option('--backend <name>', 'backend', 'auto')
    .option('--json', 'print JSON only', false)
    .parse(process.argv)
    .opts();
  const r = await benchTensorCounts({
    steps: o.steps,
    every: o.every,
    evalEvery: o.evalEvery,
    backend: o.backend,
    model: o.model,
  });
  if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else {
    for (const s of r.samples)
      process.stdout.write(
        `step ${s.step}: ${s.numTensors} tensors, ${(s.numBytes / 2 ** 20).toFixed(2)} MiB in tfjs, JS heap ${s.heapUsedMiB.toFixed(1)} MiB\n`,
      );
    process.stdout.write(
      r.flat ? 'tensor count flat\n' : `tensor count changed: ${r.tensorsStart} -> ${r.tensorsEnd}\n`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
