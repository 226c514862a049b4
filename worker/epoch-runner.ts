/**
 * One worker's training of one epoch, independent of the control link: batch -> gradients -> ring allreduce (average)
 * -> apply, with per-phase timings. Every rank runs the same number of steps (equal shards), and the global step
 * number keys the allreduce frames, so ranks stay in lockstep.
 */
import { createHash } from 'node:crypto';
import { ringAllreduce, type RingLinks } from '../shared/allreduce.js';
import type { MnistSplit } from '../shared/data/mnist.js';
import type { StepRecord } from '../shared/protocol.js';
import { batchIndices, stepsPerEpoch } from '../shared/sampler.js';
import { BatchLoader } from '../shared/train/batches.js';
import { learningRateAt, type ScheduleOptions } from '../shared/train/optim.js';
import type { Replica } from '../shared/train/replica.js';
import { StepAbortedError } from '../shared/errors.js';

export interface RingPosition { rank: number; worldSize: number; gen: number; links: RingLinks }

export interface EpochPlan {
  epoch: number;
  /** Sample indices into `split`, in training order. */
  order: Uint32Array;
  split: MnistSplit;
  batchSize: number;
  schedule: ScheduleOptions;
  /** Hash the parameters every this many global steps (0 = never). */
  checkEvery: number;
}

export interface EpochHooks {
  /** Called after every step with its record. */
  onStep(record: StepRecord): void;
  /** Checked before every step; a true value abandons the epoch. */
  shouldStop(): boolean;
}

export interface EpochResult { steps: number; trainMs: number }

/** A short fingerprint of the parameters, to check that replicas are bitwise identical. */
export function paramHash(replica: Replica, scratch?: Float32Array): string {
  const weights = replica.getWeights(scratch);
  return createHash('sha256').update(new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength)).digest('hex').slice(0, 16);
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** One synchronous data-parallel step; returns its record. */
export async function trainStep(
  replica: Replica, loader: BatchLoader, indices: Uint32Array, ring: RingPosition, globalStep: number, epoch: number,
): Promise<StepRecord> {
  const startedAt = Date.now();
  const t0 = performance.now();
  const batch = loader.load(indices);
  const t1 = performance.now();
  const { loss, gradients } = replica.computeGradients(batch);
  const t2 = performance.now();
  const { reduceScatterMs } = await ringAllreduce(gradients, { rank: ring.rank, worldSize: ring.worldSize, generation: ring.gen, step: globalStep, links: ring.links, average: true });
  const t3 = performance.now();
  replica.applyGradients(gradients);
  const t4 = performance.now();
  return { epoch, step: globalStep, loss, samples: batch.n, dataMs: t1 - t0, computeMs: t2 - t1, allreduceMs: t3 - t2, applyMs: t4 - t3, reduceScatterMs, startedAt };
}

export async function runEpoch(replica: Replica, plan: EpochPlan, ring: RingPosition, hooks: EpochHooks): Promise<EpochResult> {
  const loader = new BatchLoader(plan.split, plan.batchSize);
  const steps = stepsPerEpoch(plan.order.length, plan.batchSize);
  const scratch = new Float32Array(replica.layout.size);
  const started = performance.now();
  let lr = NaN;
  for (let s = 0; s < steps; s++) {
    // Yield so control messages (stop, membership changes) are handled between steps even on a one-worker ring.
    await yieldToEventLoop();
    if (hooks.shouldStop()) throw new StepAbortedError(plan.epoch * steps + s, 'stop requested');
    const stepLr = learningRateAt({ ...plan.schedule, worldSize: ring.worldSize }, plan.epoch, s / steps);
    if (stepLr !== lr) replica.setLearningRate((lr = stepLr));
    const globalStep = plan.epoch * steps + s;
    const record = await trainStep(replica, loader, batchIndices(plan.order, s, plan.batchSize), ring, globalStep, plan.epoch);
    if (plan.checkEvery > 0 && globalStep % plan.checkEvery === 0) record.paramHash = paramHash(replica, scratch);
    hooks.onStep(record);
  }
  return { steps, trainMs: performance.now() - started };
}
