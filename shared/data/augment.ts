/**
 * Seeded training-time augmentation (`--augment flip,crop`), applied to each training batch after it is scaled to
 * floats, never to evaluation batches.
 *
 * - `flip`: mirror left-right with probability 1/2;
 * - `crop`: pad by P = round(min(H, W) / 8) zero pixels on every side and crop back to H x W at a random offset (the
 *   CIFAR-10 recipe: P = 4 for 32x32), i.e. shift by (dy, dx) in [-P, P]^2 with zero fill.
 *
 * What happens to a sample depends only on (seed, epoch, sample id), where the id is the sample's index in the whole
 * training set: the same on every run with the same seed, whatever the world size, and whether the worker reads its
 * own copy or was sent the samples.
 */
import { ConfigError } from '../errors.js';
import { createRng, mixSeed } from '../rng.js';
import { sampleBytes, type SampleShape } from './dataset.js';

export const AUGMENT_NAMES = ['flip', 'crop'] as const;
export type AugmentName = (typeof AUGMENT_NAMES)[number];

/** 'flip,crop' (or an array of names) -> the names, deduplicated in canonical order; '' and 'none' -> []. */
export function parseAugment(value: unknown, name = '--augment'): AugmentName[] {
  const parts = Array.isArray(value) ? value.map(String) : String(value ?? '').split(',');
  const names = parts.map((p) => p.trim()).filter((p) => p !== '' && p !== 'none');
  const label = name;
  for (const n of names) {
    if (!(AUGMENT_NAMES as readonly string[]).includes(n)) {
      throw new ConfigError(`${label}: unknown augmentation '${n}' (choose from ${AUGMENT_NAMES.join(', ')})`);
    }
  }
  return AUGMENT_NAMES.filter((n) => names.includes(n));
}

/** The crop's padding for a sample shape. */
export function cropPadding(shape: SampleShape): number {
  return Math.max(1, Math.round(Math.min(shape[0], shape[1]) / 8));
}

/** What is done to one sample. */
export interface SampleTransform {
  flip: boolean;
  dy: number;
  dx: number;
}

/** The transform of sample `id` in `epoch`: a pure function of its arguments. */
export function sampleTransform(
  names: readonly AugmentName[],
  shape: SampleShape,
  seed: number,
  epoch: number,
  id: number,
): SampleTransform {
  const rng = createRng(mixSeed(mixSeed(seed, epoch), id));
  const flip = names.includes('flip') && rng.nextBelow(2) === 1;
  if (!names.includes('crop')) return { flip, dy: 0, dx: 0 };
  const p = cropPadding(shape);
  return { flip, dy: rng.nextBelow(2 * p + 1) - p, dx: rng.nextBelow(2 * p + 1) - p };
}

/** out(y, x) = in(y + dy, x' + dx) with x' = W-1-x when flipped, 0 outside; `input` and `out` must not overlap. */
export function transformSample(input: Float32Array, out: Float32Array, shape: SampleShape, t: SampleTransform): void {
  const [height, width, channels] = shape;
  for (let y = 0; y < height; y++) {
    const sy = y + t.dy;
    for (let x = 0; x < width; x++) {
      const sx = (t.flip ? width - 1 - x : x) + t.dx;
      const o = (y * width + x) * channels;
      const inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
      const s = (sy * width + sx) * channels;
      for (let c = 0; c < channels; c++) out[o + c] = inside ? input[s + c] : 0;
    }
  }
}

/** Augments float batches in place: `apply` is called with a batch's images and the sample indices it was built of. */
export interface BatchAugmenter {
  apply(images: Float32Array, indices: ArrayLike<number>, n: number): void;
}

export interface AugmenterOptions {
  names: readonly AugmentName[];
  shape: SampleShape;
  seed: number;
  epoch: number;
  /** Sample id of each split index (a shipped shard's positions -> training-set indices); default: the index. */
  ids?: ArrayLike<number>;
}

/** An augmenter for one epoch, or undefined when no augmentation is asked for. */
export function createAugmenter(o: AugmenterOptions): BatchAugmenter | undefined {
  if (o.names.length === 0) return undefined;
  const pixels = sampleBytes(o.shape);
  const scratch = new Float32Array(pixels);
  return {
    apply(images, indices, n) {
      for (let i = 0; i < n; i++) {
        const id = o.ids ? o.ids[indices[i]] : indices[i];
        const t = sampleTransform(o.names, o.shape, o.seed, o.epoch, id);
        if (!t.flip && t.dy === 0 && t.dx === 0) continue;
        const sample = images.subarray(i * pixels, (i + 1) * pixels);
        scratch.set(sample);
        transformSample(scratch, sample, o.shape, t);
      }
    },
  };
}
