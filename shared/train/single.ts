/**
 * The single-process trainer (`ringtrain train`): the baseline a user would otherwise run, and the reference the
 * cluster is measured against. Same Replica, same sampler and same schedule as a one-worker cluster.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { TrainConfig } from '../config.js';
import { limitDataset, type Dataset } from '../data/dataset.js';
import { loadDataset, type DataOptions } from '../data/load.js';
import { createAugmenter, parseAugment, type BatchAugmenter } from '../data/augment.js';
import type { Logger } from '../log.js';
import type { ProgressView } from '../cli/progress.js';
import { shardForRank, stepsPerEpoch, batchIndices } from '../data/sampler.js';
import { selectBackend, type BackendChoice, type BackendName } from '../tf/backend.js';
import { BatchLoader, evaluateRange } from './batches.js';
import { saveModel } from './model-io.js';
import { resolveModel } from './model-spec.js';
import { learningRateAt } from './optim.js';
import { Replica, replicaOptions } from './replica.js';
import { metadataOf, modelShapeOf } from './run-model.js';
import { dryRunStep } from './trainability.js';

export interface SingleRunOptions {
  config: TrainConfig;
  backend: BackendChoice;
  /** TensorFlow threads (`--threads`); undefined = the backend's default. */
  threads?: number;
  /** `--step-graph`: off keeps every step op by op on the tensorflow backend. */
  stepGraph?: 'auto' | 'off';
  dataDir?: string;
  dataOptions?: DataOptions;
  summaryJson?: string;
  /** Folder for the trained model (model.json + weights.bin); none when absent. */
  saveDir?: string;
  log: Logger;
  progress: ProgressView;
}

export interface EpochResult {
  epoch: number;
  testAccuracy: number;
  testLoss: number;
  trainLoss: number;
  seconds: number;
}

export interface TrainSummary {
  model: string;
  backend: BackendName;
  epochs: number;
  steps: number;
  testAccuracy: number;
  /** Training samples per second of training time (evaluation excluded). */
  samplesPerSec: number;
  wallSeconds: number;
  history: EpochResult[];
}

export async function trainSingle(opts: SingleRunOptions): Promise<TrainSummary> {
  const started = performance.now();
  const { config, log } = opts;
  const backend = await selectBackend(opts.backend, log, { threads: opts.threads });
  const data = limitDataset(await loadDataset(opts.dataDir, opts.dataOptions), config.trainLimit, config.testLimit);
  log.info({ source: data.source, train: data.train.count, test: data.test.count }, 'dataset loaded');
  const { built } = await resolveModel(config.model, modelShapeOf(data), config.seed);
  const replica = new Replica(
    built,
    { name: config.optimizer, lr: config.lr, momentum: config.momentum },
    replicaOptions(opts.stepGraph, log),
  );
  dryRunStep(replica, backend);
  const summary = await trainLoop(replica, data, opts);
  if (opts.saveDir) {
    await saveModel(replica.built.model, opts.saveDir, metadataOf(data, summary.testAccuracy));
    log.info({ dir: opts.saveDir }, 'model saved');
  }
  replica.dispose();
  const result: TrainSummary = {
    ...summary,
    model: config.model,
    backend,
    wallSeconds: (performance.now() - started) / 1000,
  };
  if (opts.summaryJson) await writeJson(opts.summaryJson, result);
  return result;
}

type LoopSummary = Pick<TrainSummary, 'epochs' | 'steps' | 'testAccuracy' | 'samplesPerSec' | 'history'>;

/** The epoch's training augmentation (--augment), the same transforms a cluster worker applies. */
function epochAugmenter(config: TrainConfig, data: Dataset, epoch: number): BatchAugmenter | undefined {
  return createAugmenter({ names: parseAugment(config.augment), shape: data.shape, seed: config.seed, epoch });
}

async function trainLoop(replica: Replica, data: Dataset, opts: SingleRunOptions): Promise<LoopSummary> {
  const { config, log, progress } = opts;
  const history: EpochResult[] = [];
  let steps = 0;
  let samples = 0;
  let trainMs = 0;
  for (let epoch = 0; epoch < config.epochs; epoch++) {
    const epochStart = performance.now();
    replica.setLearningRate(learningRateAt({ baseLr: config.lr, decay: config.lrDecay }, epoch));
    const shard = shardForRank({
      datasetSize: data.train.count,
      worldSize: 1,
      rank: 0,
      seed: config.seed,
      epoch,
      shuffle: true,
    });
    const nSteps = stepsPerEpoch(shard.length, config.batchSize);
    const loader = new BatchLoader(data.train, config.batchSize, epochAugmenter(config, data, epoch));
    progress.begin(`epoch ${epoch + 1}/${config.epochs}`, shard.length);
    let lossSum = 0;
    for (let step = 0; step < nSteps; step++) {
      const batch = loader.load(batchIndices(shard, step, config.batchSize));
      const { loss, gradients } = replica.computeGradients(batch);
      replica.applyGradients(gradients);
      lossSum += loss;
      samples += batch.n;
      steps++;
      progress.update(Math.min(shard.length, (step + 1) * config.batchSize), { loss: lossSum / (step + 1) });
    }
    trainMs += performance.now() - epochStart;
    const evalCounts = evaluateRange(replica, data.test, 0, data.test.count);
    const result: EpochResult = {
      epoch: epoch + 1,
      testAccuracy: evalCounts.correct / Math.max(1, evalCounts.total),
      testLoss: evalCounts.lossSum / Math.max(1, evalCounts.total),
      trainLoss: lossSum / Math.max(1, nSteps),
      seconds: (performance.now() - epochStart) / 1000,
    };
    history.push(result);
    log.info({ ...result, lr: replica.learningRate, steps }, 'epoch finished');
    progress.line(
      `epoch ${result.epoch}: train loss ${result.trainLoss.toFixed(4)}  test accuracy ${(100 * result.testAccuracy).toFixed(2)}%  (${result.seconds.toFixed(1)} s)`,
    );
    if (config.targetAccuracy > 0 && result.testAccuracy >= config.targetAccuracy) {
      log.info({ epoch: result.epoch, testAccuracy: result.testAccuracy }, 'target accuracy reached');
      break;
    }
  }
  progress.stop();
  const last = history[history.length - 1];
  return {
    epochs: history.length,
    steps,
    testAccuracy: last?.testAccuracy ?? 0,
    samplesPerSec: samples / Math.max(1e-9, trainMs / 1000),
    history,
  };
}

export async function writeJson(file: string, value: unknown): Promise<void> {
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await fs.writeFile(file, `${JSON.stringify(value, null, 2)}\n`);
}
