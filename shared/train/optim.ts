/**
 * Optimizer options and the learning-rate schedule (the optimizers themselves: flat-optim.ts).
 * The schedule is pure: the learning rate for (epoch, fraction of the epoch done) under per-epoch exponential decay,
 * optionally scaled by world size with a linear warmup (Goyal et al. 2017, as Horovod recommends).
 */
import type { OptimizerName } from './names.js';

export { parseOptimizerName, type OptimizerName } from './names.js';

export interface OptimizerOptions {
  name: OptimizerName;
  lr: number;
  /** SGD momentum (0 = plain SGD). */
  momentum?: number;
}

export interface ScheduleOptions {
  baseLr: number;
  /** Multiply the learning rate by this after every epoch (1 = constant). */
  decay: number;
  /** Scale the learning rate by the number of workers (for a per-worker batch size). */
  scaleByWorldSize?: boolean;
  worldSize?: number;
  /** Ramp linearly from baseLr to baseLr * worldSize over this many epochs (only with scaleByWorldSize). */
  warmupEpochs?: number;
}

/** The learning rate at `epoch` (0-based) after `fraction` (0..1) of it. */
export function learningRateAt(opts: ScheduleOptions, epoch: number, fraction = 0): number {
  const decayed = opts.baseLr * Math.pow(opts.decay, epoch);
  const world = opts.worldSize ?? 1;
  if (!opts.scaleByWorldSize || world <= 1) return decayed;
  const warmup = opts.warmupEpochs ?? 0;
  const progress = epoch + fraction;
  const multiplier = warmup > 0 && progress < warmup ? 1 + (world - 1) * (progress / warmup) : world;
  return decayed * multiplier;
}
