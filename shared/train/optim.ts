/**
 * Optimizers and the learning-rate schedule.
 * The schedule is pure: the learning rate for (epoch, fraction of the epoch done) under per-epoch exponential decay,
 * optionally scaled by world size with a linear warmup (Goyal et al. 2017, as Horovod recommends).
 */
import * as tf from '@tensorflow/tfjs';
import type { OptimizerName } from './names.js';

export { parseOptimizerName, type OptimizerName } from './names.js';

export interface OptimizerOptions {
  name: OptimizerName;
  lr: number;
  /** SGD momentum (0 = plain SGD). */
  momentum?: number;
}

export function createOptimizer(opts: OptimizerOptions): tf.Optimizer {
  switch (opts.name) {
    case 'adam':
      return tf.train.adam(opts.lr);
    case 'sgd':
      return (opts.momentum ?? 0.9) > 0 ? tf.train.momentum(opts.lr, opts.momentum ?? 0.9) : tf.train.sgd(opts.lr);
    case 'adadelta':
      return tf.train.adadelta(opts.lr);
  }
}

/** Optimizer slots per trainable variable, in the order tfjs's getWeights() lists them. */
export function slotsPerVariable(opts: OptimizerOptions): number {
  switch (opts.name) {
    case 'adam':
      return 2;
    case 'sgd':
      return (opts.momentum ?? 0.9) > 0 ? 1 : 0;
    case 'adadelta':
      return 2;
  }
}

/** tfjs optimizers read `learningRate` at every step, except SGD/momentum which cache it in a scalar. */
export function setLearningRate(optimizer: tf.Optimizer, lr: number): void {
  const o = optimizer as unknown as { learningRate: number; setLearningRate?: (lr: number) => void };
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  else o.learningRate = lr;
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
