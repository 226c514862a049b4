/**
 * What each rank trains on and evaluates under one generation's plan, as the `shard` message that carries it: indices
 * for workers with a local copy of the dataset, the sample bytes themselves for workers without one.
 */
import { sliceSplit, type Dataset } from '../shared/data/dataset.js';
import { datasetDifference } from '../shared/data/info.js';
import { uint32ToBytes, type DatasetInfo, type HelloMessage, type ShardMessage } from '../shared/wire/protocol.js';
import { evalShard, shardForRank } from '../shared/data/sampler.js';
import type { EpochPlan } from './epoch-plan.js';

export interface ShardRequest {
  gen: number;
  plan: EpochPlan;
  rank: number;
  seed: number;
  /** The worker has its own copy of the dataset: send indices only. */
  hasData: boolean;
}

/**
 * Why a worker reading its own copy of the data is refused (a close reason, logged here), or undefined when its data
 * is ours.
 */
export function datasetRefusal(hello: HelloMessage, own: DatasetInfo): string | undefined {
  if (!hello.hasData) return undefined;
  if (!hello.dataset) return 'dataset mismatch: the worker did not describe its dataset';
  return datasetDifference(hello.dataset, own);
}

export function planShard(data: Dataset, req: ShardRequest): ShardMessage {
  const { plan, rank } = req;
  const indices = shardForRank({
    datasetSize: data.train.count,
    worldSize: plan.worldSize,
    rank,
    seed: req.seed,
    epoch: plan.epoch,
    shuffle: true,
    offset: plan.offset,
  });
  const test = evalShard(data.test.count, plan.worldSize, rank);
  const msg: ShardMessage = {
    type: 'shard',
    gen: req.gen,
    epoch: plan.epoch,
    indices: uint32ToBytes(indices),
    testStart: test.start,
    testEnd: test.end,
    firstStep: plan.firstStep,
    epochSamples: plan.epochSamples,
    offset: plan.offset,
  };
  if (!req.hasData) {
    const train = sliceSplit(data.train, indices);
    msg.images = train.images;
    msg.labels = train.labels;
    const testSlice = sliceSplit(
      data.test,
      Uint32Array.from({ length: test.end - test.start }, (_, i) => test.start + i),
    );
    msg.testImages = testSlice.images;
    msg.testLabels = testSlice.labels;
    const [height, width, channels] = data.shape;
    msg.sampleShape = { height, width, channels };
  }
  return msg;
}
