/**
 * What each rank trains on and evaluates in an epoch, as the `shard` message that carries it: indices for workers
 * with a local copy of the dataset, the sample bytes themselves for workers without one.
 */
import { sliceSplit, type MnistDataset } from '../shared/data/mnist.js';
import type { ShardMessage } from '../shared/protocol.js';
import { uint32ToBytes } from '../shared/protocol.js';
import { evalShard, shardForRank } from '../shared/sampler.js';

export interface ShardRequest {
  gen: number;
  epoch: number;
  rank: number;
  worldSize: number;
  seed: number;
  /** The worker has its own copy of the dataset: send indices only. */
  hasData: boolean;
  /** Include the evaluation samples (a worker without data needs them once per generation). */
  includeTest: boolean;
}

export function planShard(data: MnistDataset, req: ShardRequest): ShardMessage {
  const indices = shardForRank({ datasetSize: data.train.count, worldSize: req.worldSize, rank: req.rank, seed: req.seed, epoch: req.epoch, shuffle: true });
  const test = evalShard(data.test.count, req.worldSize, req.rank);
  const msg: ShardMessage = {
    type: 'shard', gen: req.gen, epoch: req.epoch, indices: uint32ToBytes(indices), testStart: test.start, testEnd: test.end,
  };
  if (!req.hasData) {
    const train = sliceSplit(data.train, indices);
    msg.images = train.images;
    msg.labels = train.labels;
    if (req.includeTest) {
      const testIdx = Uint32Array.from({ length: test.end - test.start }, (_, i) => test.start + i);
      const testSlice = sliceSplit(data.test, testIdx);
      msg.testImages = testSlice.images;
      msg.testLabels = testSlice.labels;
    }
  }
  return msg;
}
