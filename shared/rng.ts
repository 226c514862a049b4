/**
 * A small, seedable, platform-independent pseudo-random number generator.
 *
 * Every rank must derive the same shuffle from the same seed, and a checkpoint must be able to
 * save and restore the generator, so everything here is pure 32-bit integer arithmetic
 * (`Math.imul`, shifts) whose results are defined bit for bit by the ECMAScript spec, and the whole
 * state is one uint32 exposed as `number[]`.
 *
 * The generator is splitmix32: a Weyl sequence (state += golden-ratio constant) passed through the
 * murmur3 32-bit finalizer. Period 2^32, every output value reachable, good avalanche; more than
 * enough for shuffling datasets of up to millions of samples.
 */

const GOLDEN_GAMMA = 0x9e3779b9;
const TWO_POW_32 = 4294967296;

export interface Rng {
  /** A float in [0, 1) with 32 bits of randomness. */
  next(): number;
  /** An integer in [0, 2^32). */
  nextUint32(): number;
  /** An unbiased integer in [0, bound), bound a positive integer <= 2^32. */
  nextBelow(bound: number): number;
  /** The generator's state, to be saved (e.g. in a checkpoint) and restored with `rngFromState`. */
  state(): number[];
}

/** The murmur3 32-bit finalizer: a bijection on uint32 with full avalanche. */
function fmix32(value: number): number {
  let h = value >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Reduce any safe integer (negative or above 2^32 included) to a uint32 seed without discarding its
 * high bits, so seeds 1 and 2^32 + 1 give different streams.
 */
function seedToUint32(seed: number, what: string): number {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`${what} must be a safe integer, got ${String(seed)}`);
  const low = seed >>> 0;
  const high = Math.floor(seed / TWO_POW_32) >>> 0;
  return high === 0 ? low : (low ^ fmix32(high + GOLDEN_GAMMA)) >>> 0;
}

class SplitMix32 implements Rng {
  constructor(private current: number) {}

  nextUint32(): number {
    this.current = (this.current + GOLDEN_GAMMA) >>> 0;
    return fmix32(this.current);
  }

  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  nextBelow(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > TWO_POW_32) {
      throw new RangeError(`bound must be an integer in [1, 2^32], got ${String(bound)}`);
    }
    // Rejection sampling: drop the top partial block of 2^32 so every residue is equally likely.
    const limit = TWO_POW_32 - (TWO_POW_32 % bound);
    let value = this.nextUint32();
    while (value >= limit) value = this.nextUint32();
    return value % bound;
  }

  state(): number[] {
    return [this.current];
  }
}

/** A generator seeded with any safe integer. Equal seeds give equal streams on every platform. */
export function createRng(seed: number): Rng {
  // Scramble the seed once so nearby seeds (0, 1, 2, ...) start far apart in the Weyl sequence.
  return new SplitMix32(fmix32(seedToUint32(seed, 'seed') ^ 0x5bd1e995));
}

/** Restore a generator from `rng.state()`; it continues exactly where the saved one stopped. */
export function rngFromState(state: readonly number[]): Rng {
  if (!Array.isArray(state) || state.length !== 1) {
    throw new RangeError(`rng state must be an array of one uint32, got ${JSON.stringify(state)}`);
  }
  const word = state[0];
  if (!Number.isInteger(word) || word < 0 || word >= TWO_POW_32) {
    throw new RangeError(`rng state word must be a uint32, got ${String(word)}`);
  }
  return new SplitMix32(word);
}

/**
 * Combine two integers (typically a run seed and an epoch) into one seed. Order matters
 * (mixSeed(a, b) !== mixSeed(b, a) in general) and small changes in either input change the result
 * completely, so consecutive epochs get unrelated shuffles.
 */
export function mixSeed(a: number, b: number): number {
  const first = fmix32(seedToUint32(a, 'first seed') + GOLDEN_GAMMA);
  const second = seedToUint32(b, 'second seed');
  return fmix32((first ^ fmix32(second ^ 0x27d4eb2f)) + Math.imul(second, 0x165667b1));
}

/** A uniformly random permutation of 0..n-1 (Fisher-Yates), fully determined by `seed`. */
export function permutation(n: number, seed: number): Uint32Array {
  if (!Number.isInteger(n) || n < 0 || n > TWO_POW_32) {
    throw new RangeError(`permutation size must be an integer in [0, 2^32], got ${String(n)}`);
  }
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const rng = createRng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextBelow(i + 1);
    const swap = order[i];
    order[i] = order[j];
    order[j] = swap;
  }
  return order;
}
