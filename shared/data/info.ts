/**
 * A dataset's identity, sent by a worker that reads its own copy (in `hello`) and compared by the coordinator with
 * its own: a worker whose samples would not be the coordinator's (another shape, other classes, other split sizes,
 * other bytes) is refused at the door rather than training on different data.
 */
import { createHash } from 'node:crypto';
import type { DatasetInfo } from '../wire/protocol.js';
import { formatShape, type Dataset, type SampleShape } from './dataset.js';

/** The description of `data` (the full dataset, before --train-limit / --test-limit). */
export function describeDataset(data: Dataset): DatasetInfo {
  const hash = createHash('sha256');
  hash.update(data.shape.join(','));
  for (const split of [data.train, data.test]) {
    hash.update(split.labels);
    hash.update(split.images);
  }
  const [height, width, channels] = data.shape;
  return {
    format: data.format,
    height,
    width,
    channels,
    classNames: [...data.classNames],
    trainCount: data.train.count,
    testCount: data.test.count,
    fingerprint: hash.digest('hex').slice(0, 16),
  };
}

function shapeOf(info: DatasetInfo): SampleShape {
  return [info.height, info.width, info.channels];
}

function describeClasses(names: readonly string[]): string {
  const shown = names.slice(0, 4).join(', ');
  return `${names.length} classes (${shown}${names.length > 4 ? ', ...' : ''})`;
}

/**
 * How a worker's dataset differs from the coordinator's, in a few words (it becomes a WebSocket close reason, at
 * most 123 bytes), or undefined when they are the same.
 */
export function datasetDifference(worker: DatasetInfo, coordinator: DatasetInfo): string | undefined {
  const ws = formatShape(shapeOf(worker));
  const cs = formatShape(shapeOf(coordinator));
  if (ws !== cs) return `dataset mismatch: samples ${ws} here, ${cs} at the coordinator`;
  const sameClasses =
    worker.classNames.length === coordinator.classNames.length &&
    worker.classNames.every((name, i) => name === coordinator.classNames[i]);
  if (!sameClasses) {
    return truncate(
      `dataset mismatch: ${describeClasses(worker.classNames)} here, ${describeClasses(coordinator.classNames)}`,
    );
  }
  if (worker.trainCount !== coordinator.trainCount || worker.testCount !== coordinator.testCount) {
    return (
      `dataset mismatch: ${worker.trainCount} train / ${worker.testCount} test samples here, ` +
      `${coordinator.trainCount} / ${coordinator.testCount} at the coordinator`
    );
  }
  if (worker.fingerprint !== coordinator.fingerprint) {
    return `dataset mismatch: same shape, classes and sizes but other samples (fingerprint ${worker.fingerprint})`;
  }
  return undefined;
}

function truncate(text: string, max = 120): string {
  return Buffer.byteLength(text) <= max
    ? text
    : `${Buffer.from(text)
        .subarray(0, max - 3)
        .toString()}...`;
}
