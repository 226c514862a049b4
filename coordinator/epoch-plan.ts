/**
 * Where a run stands, as pure arithmetic: an epoch's order is trained as a prefix, so a position is just
 * (epoch, samples of its order consumed, global steps done). A plan is one generation's share-out of the rest of an
 * epoch; after k of its steps, the first offset + k * batch * world samples of the order are consumed (capped at the
 * epoch size: the last batches are padded by wrap-around).
 */
import { shardLength, stepsPerEpoch } from '../shared/data/sampler.js';

export interface Position {
  epoch: number;
  /** Samples of the epoch's order already trained on. */
  consumed: number;
  /** Global steps completed (every replica has applied this many updates). */
  step: number;
}

export interface EpochPlan {
  epoch: number;
  epochSamples: number;
  offset: number;
  worldSize: number;
  batchSize: number;
  firstStep: number;
  /** Steps this plan runs on every rank. */
  steps: number;
}

export function planFrom(pos: Position, epochSamples: number, worldSize: number, batchSize: number): EpochPlan {
  const remaining = Math.max(0, epochSamples - pos.consumed);
  const steps = stepsPerEpoch(shardLength(remaining, worldSize), batchSize);
  return {
    epoch: pos.epoch,
    epochSamples,
    offset: Math.min(pos.consumed, epochSamples),
    worldSize,
    batchSize,
    firstStep: pos.step,
    steps,
  };
}

/** The position after a replica of this plan completed `step` global steps (clamped to the plan). */
export function positionAt(plan: EpochPlan, step: number): Position {
  const k = Math.min(plan.steps, Math.max(0, step - plan.firstStep));
  const consumed =
    k >= plan.steps
      ? plan.epochSamples
      : Math.min(plan.epochSamples, plan.offset + k * plan.batchSize * plan.worldSize);
  return { epoch: plan.epoch, consumed, step: plan.firstStep + k };
}

/** Whether the epoch's training is complete at this position. */
export function epochTrained(pos: Position, epochSamples: number): boolean {
  return pos.consumed >= epochSamples;
}
