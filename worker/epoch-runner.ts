/**
 * One worker's training of one shard, independent of the control link: batch -> gradients -> ring allreduce (average)
 * -> apply, with per-phase timings. Every rank of a generation runs the same number of steps (equal shards), and the
 * global step number keys the allreduce frames, so ranks stay in lockstep. Because every replica holds the same
 * averaged gradients, a non-finite value is seen by all of them at once, and all skip (or abort) that step together.
 */
import { createHash } from 'node:crypto';
import { ringAllreduce, type Compression, type RingLinks } from '../shared/ring/allreduce.js';
import type { BatchAugmenter } from '../shared/data/augment.js';
import type { DataSplit } from '../shared/data/dataset.js';
import { RingtrainError, StepAbortedError } from '../shared/errors.js';
import type { StepRecord } from '../shared/wire/protocol.js';
import { batchIndices, stepsPerEpoch } from '../shared/data/sampler.js';
import { BatchLoader } from '../shared/train/batches.js';
import { learningRateAt, type ScheduleOptions } from '../shared/train/optim.js';
import type { Batch, Replica } from '../shared/train/replica.js';

export interface RingPosition {
  rank: number;
  worldSize: number;
  gen: number;
  links: RingLinks;
  /** Gradient wire encoding (default 'none'); every rank of a ring must use the same. */
  compression?: Compression;
}

export type NonFinitePolicy = 'skip' | 'abort';

export interface ShardPlan {
  epoch: number;
  /** Sample indices into `split`, in training order. */
  order: Uint32Array;
  split: DataSplit;
  batchSize: number;
  /** Applied to every training batch (none by default). */
  augment?: BatchAugmenter;
  /** Global step number of the first batch. */
  firstStep: number;
  /** Samples in the whole epoch and how many earlier generations trained (for the schedule's epoch fraction). */
  epochSamples: number;
  offset: number;
  schedule: ScheduleOptions;
  /** Hash the parameters every this many global steps (0 = never). */
  checkEvery: number;
  nonFinite: NonFinitePolicy;
  /** Testing only: sleep this long before every step (a deliberately slow worker). */
  debugDelayMs?: number;
}

export interface ShardHooks {
  /** Called after every step with its record. */
  onStep(record: StepRecord): void;
  /** Checked before every step; true abandons the shard. */
  shouldStop(): boolean;
  /** Work that must see the replica between steps (weights for a checkpoint); awaited before the next step. */
  atBoundary(): Promise<void>;
}

export interface ShardResult {
  steps: number;
  trainMs: number;
}

/** Averaged gradients held a NaN or an infinity; every replica saw the same values. */
export class NonFiniteGradientError extends RingtrainError {
  constructor(step: number) {
    super('STEP_ABORTED', `step ${step}: non-finite values in the averaged gradients`);
  }
}

/** A short fingerprint of the parameters, to check that replicas are bitwise identical. */
export function paramHash(replica: Replica, scratch?: Float32Array): string {
  const weights = replica.getWeights(scratch);
  return createHash('sha256')
    .update(new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength))
    .digest('hex')
    .slice(0, 16);
}

function allFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return false;
  return true;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Where a step's batch comes from: a BatchLoader, or the shard's PrefetchingLoader. */
export interface StepInput {
  load(indices: Uint32Array): Batch;
}

/**
 * The shard's batches, each loaded while the previous step's allreduce is on the wire: two BatchLoaders take turns,
 * so the batch being prefetched never overwrites the one a step still uses. (That is the overlap tfjs leaves room for:
 * it computes every gradient in one synchronous call, and Adam must apply all of them in one call, as it advances its
 * step count per call, so neither side of the allreduce can be split into layers.)
 */
export class PrefetchingLoader implements StepInput {
  private readonly loaders: [BatchLoader, BatchLoader];
  private current = 0;
  private ready?: { indices: Uint32Array; batch: Batch };

  constructor(split: DataSplit, batchSize: number, augment?: BatchAugmenter) {
    this.loaders = [new BatchLoader(split, batchSize, augment), new BatchLoader(split, batchSize, augment)];
  }

  load(indices: Uint32Array): Batch {
    const ready = this.ready;
    this.ready = undefined;
    if (ready?.indices === indices) {
      this.current ^= 1;
      return ready.batch;
    }
    return this.loaders[this.current]!.load(indices);
  }

  /** Load the batch of `indices` into the loader the current step does not use. */
  prefetch(indices: Uint32Array): void {
    this.ready = { indices, batch: this.loaders[this.current ^ 1]!.load(indices) };
  }
}

/**
 * One synchronous data-parallel step; returns its record (nonFinite set when the update was skipped). `whileReducing`
 * runs once the allreduce has put its first frames on the wire, while the ring works (the next batch's loading).
 */
export async function trainStep(
  replica: Replica,
  loader: StepInput,
  indices: Uint32Array,
  ring: RingPosition,
  globalStep: number,
  epoch: number,
  nonFinite: NonFinitePolicy = 'skip',
  whileReducing?: () => void,
): Promise<StepRecord> {
  const startedAt = Date.now();
  const t0 = performance.now();
  const batch = loader.load(indices);
  const t1 = performance.now();
  const { loss, gradients } = replica.computeGradients(batch);
  const t2 = performance.now();
  const reducing = ringAllreduce(gradients, {
    rank: ring.rank,
    worldSize: ring.worldSize,
    generation: ring.gen,
    step: globalStep,
    links: ring.links,
    average: true,
    compression: ring.compression ?? 'none',
  });
  if (whileReducing) {
    try {
      whileReducing();
    } catch (err) {
      reducing.catch(() => undefined); // the step fails with the prefetch error
      throw err;
    }
  }
  const { reduceScatterMs } = await reducing;
  const t3 = performance.now();
  const finite = allFinite(gradients);
  if (!finite && nonFinite === 'abort') throw new NonFiniteGradientError(globalStep);
  if (finite) replica.applyGradients(gradients);
  const t4 = performance.now();
  const record: StepRecord = {
    epoch,
    step: globalStep,
    loss,
    samples: batch.n,
    dataMs: t1 - t0,
    computeMs: t2 - t1,
    allreduceMs: t3 - t2,
    applyMs: t4 - t3,
    reduceScatterMs,
    startedAt,
  };
  if (!finite) record.nonFinite = true;
  return record;
}

export async function runShard(
  replica: Replica,
  plan: ShardPlan,
  ring: RingPosition,
  hooks: ShardHooks,
): Promise<ShardResult> {
  const loader = new PrefetchingLoader(plan.split, plan.batchSize, plan.augment);
  const steps = stepsPerEpoch(plan.order.length, plan.batchSize);
  let indices = steps > 0 ? batchIndices(plan.order, 0, plan.batchSize) : new Uint32Array(0);
  const scratch = new Float32Array(replica.layout.size);
  const started = performance.now();
  const samplesPerStep = plan.batchSize * ring.worldSize;
  let lr = NaN;
  for (let s = 0; s < steps; s++) {
    // Yield so control messages (stop, membership changes) are handled between steps even on a one-worker ring.
    await yieldToEventLoop();
    await hooks.atBoundary();
    const globalStep = plan.firstStep + s;
    if (hooks.shouldStop()) throw new StepAbortedError(globalStep, 'stop requested or membership changed');
    const fraction = plan.epochSamples > 0 ? Math.min(1, (plan.offset + s * samplesPerStep) / plan.epochSamples) : 1;
    const stepLr = learningRateAt({ ...plan.schedule, worldSize: ring.worldSize }, plan.epoch, fraction);
    if (stepLr !== lr) replica.setLearningRate((lr = stepLr));
    if (plan.debugDelayMs) await new Promise((resolve) => setTimeout(resolve, plan.debugDelayMs));
    const next = s + 1 < steps ? batchIndices(plan.order, s + 1, plan.batchSize) : undefined;
    const record = await trainStep(
      replica,
      loader,
      indices,
      ring,
      globalStep,
      plan.epoch,
      plan.nonFinite,
      next && (() => loader.prefetch(next)),
    );
    if (next) indices = next;
    if (plan.checkEvery > 0 && globalStep % plan.checkEvery === 0) record.paramHash = paramHash(replica, scratch);
    hooks.onStep(record);
  }
  await hooks.atBoundary();
  return { steps, trainMs: performance.now() - started };
}
