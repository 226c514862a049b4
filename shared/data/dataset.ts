/**
 * The one dataset type every format loads into (IDX, CIFAR-10 binary batches, class folders of images), and the
 * per-sample helpers that turn chosen samples into model input without per-step allocation.
 *
 * Samples are uint8 pixels, each sample `height * width * channels` bytes in HWC order (row-major, channels last, as
 * TensorFlow.js and Keras expect), contiguous; labels are one byte each (class index), so at most 256 classes.
 */
import { LayoutMismatchError } from '../errors.js';

/** [height, width, channels] of one sample. */
export type SampleShape = readonly [number, number, number];

/** Where the samples came from. */
export type DatasetFormat = 'idx' | 'cifar10' | 'folders';

/** One split: `count` samples of `shape`, contiguous, and one label byte each. */
export interface DataSplit {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  shape: SampleShape;
}

export interface Dataset {
  train: DataSplit;
  test: DataSplit;
  /** The shape of every sample, in both splits. */
  shape: SampleShape;
  numClasses: number;
  /** numClasses names; label i is classNames[i]. */
  classNames: string[];
  format: DatasetFormat;
  /** The directory the files were read from. */
  source: string;
}

/** Bytes of one sample of `shape`. */
export function sampleBytes(shape: SampleShape): number {
  return shape[0] * shape[1] * shape[2];
}

/** `HxWxC`, for messages. */
export function formatShape(shape: SampleShape): string {
  return shape.join('x');
}

/** A split over existing bytes; throws LayoutMismatchError when the byte counts disagree with shape and labels. */
export function makeSplit(images: Uint8Array, labels: Uint8Array, shape: SampleShape): DataSplit {
  const expected = labels.length * sampleBytes(shape);
  if (images.length !== expected) {
    throw new LayoutMismatchError(`images of ${labels.length} ${formatShape(shape)} samples`, expected, images.length);
  }
  return { images, labels, count: labels.length, shape };
}

/** Default class names when a format has none: the label numbers themselves. */
export function numberedClassNames(numClasses: number): string[] {
  return Array.from({ length: numClasses }, (_, i) => String(i));
}

/** pixel / 255 for every byte value, so the hot loop is a table lookup rather than a division. */
const PIXEL_TO_UNIT = Float32Array.from({ length: 256 }, (_, value) => value / 255);

function checkIndex(split: DataSplit, index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= split.count) {
    throw new RangeError(`sample index ${index} is outside 0..${split.count - 1}`);
  }
}

/** `out` itself when it has exactly `length` elements, a view of its head when longer. */
function fitOutput<T extends Float32Array | Int32Array>(out: T, length: number, what: string): T {
  if (out.length < length) throw new LayoutMismatchError(what, length, out.length);
  return (out.length === length ? out : out.subarray(0, length)) as T;
}

/**
 * The samples at `indices` as floats in [0, 1], laid out [n, height, width, channels] contiguously.
 * Pass `out` (at least n * sampleBytes long) to fill it instead of allocating; the returned array
 * is `out` itself when its length is exact, so a fixed batch size allocates nothing per step.
 */
export function toFloatImages(split: DataSplit, indices: ArrayLike<number>, out?: Float32Array): Float32Array {
  const pixels = sampleBytes(split.shape);
  const length = indices.length * pixels;
  const target = out ? fitOutput(out, length, 'toFloatImages output') : new Float32Array(length);
  const images = split.images;
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    const source = sample * pixels;
    const dest = i * pixels;
    for (let p = 0; p < pixels; p++) target[dest + p] = PIXEL_TO_UNIT[images[source + p]];
  }
  return target;
}

/** The labels at `indices` as int32 class indices, filling `out` when given (same rules as toFloatImages). */
export function gatherLabels(split: DataSplit, indices: ArrayLike<number>, out?: Int32Array): Int32Array {
  const target = out ? fitOutput(out, indices.length, 'gatherLabels output') : new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    target[i] = split.labels[sample];
  }
  return target;
}

/** A new split holding copies of only the samples at `indices`, in that order (e.g. a worker's shard). */
export function sliceSplit(split: DataSplit, indices: ArrayLike<number>): DataSplit {
  const pixels = sampleBytes(split.shape);
  const images = new Uint8Array(indices.length * pixels);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const sample = indices[i];
    checkIndex(split, sample);
    images.set(split.images.subarray(sample * pixels, (sample + 1) * pixels), i * pixels);
    labels[i] = split.labels[sample];
  }
  return { images, labels, count: indices.length, shape: split.shape };
}

/**
 * The first `n` samples (all of them when `n` >= count). The result shares memory with `split`
 * (views, no copy); use sliceSplit when an independent copy is needed.
 */
export function limitSplit(split: DataSplit, n: number): DataSplit {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`sample limit must be a non-negative integer, got ${n}`);
  const count = Math.min(n, split.count);
  const pixels = sampleBytes(split.shape);
  return {
    images: split.images.subarray(0, count * pixels),
    labels: split.labels.subarray(0, count),
    count,
    shape: split.shape,
  };
}

/** The dataset with its splits cut to the first trainLimit / testLimit samples (0 = all). */
export function limitDataset(data: Dataset, trainLimit: number, testLimit: number): Dataset {
  return {
    ...data,
    train: trainLimit > 0 ? limitSplit(data.train, trainLimit) : data.train,
    test: testLimit > 0 ? limitSplit(data.test, testLimit) : data.test,
  };
}
