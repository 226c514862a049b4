/**
 * The optimizers, as loops over flat buffers: the averaged gradients of every trainable weight in one Float32Array,
 * the weights in another, the slots in a third. Pure JavaScript, no TensorFlow.js.
 *
 * Why not tfjs's optimizers: they run about fourteen tensor ops per variable per step (Adam), and each op costs a
 * fixed 20-60 us on the native backend whatever its size: on LeNet-5 that made the update a fifth of a cluster step
 * on `tensorflow`. One loop over 62k weights takes a fraction of a millisecond. And the update is the same code on
 * every backend, so it never differs between replicas.
 *
 * The formulas are tfjs's own (optimizers/*_optimizer.ts), with its defaults (epsilon 1e-7, Adam's betas 0.9 and
 * 0.999, Adadelta's rho 0.95), computed in double precision and stored as float32; the state keeps tfjs's layout:
 * [iterations, slot 0 of every weight..., slot 1 of every weight...].
 */
import type { OptimizerOptions } from './optim.js';

/** Which optimizer, and SGD's momentum (0 = plain SGD; default 0.9); the learning rate comes with every step. */
type FlatOptimizerOptions = Pick<OptimizerOptions, 'name' | 'momentum'>;

const EPSILON = 1e-7;
const BETA1 = 0.9;
const BETA2 = 0.999;
const RHO = 0.95;

export function slotCount(opts: FlatOptimizerOptions): number {
  if (opts.name === 'sgd') return (opts.momentum ?? 0.9) > 0 ? 1 : 0;
  return 2; // adam: first and second moments; adadelta: accumulated gradients and updates
}

export class FlatOptimizer {
  /** [iterations, slots...]: what checkpoints hold. */
  readonly state: Float32Array;
  private readonly slots: Float32Array[];

  constructor(
    private readonly opts: FlatOptimizerOptions,
    /** Number of trainable weights. */
    readonly size: number,
  ) {
    const k = slotCount(opts);
    this.state = new Float32Array(1 + k * size);
    this.slots = Array.from({ length: k }, (_, i) => this.state.subarray(1 + i * size, 1 + (i + 1) * size));
  }

  get iterations(): number {
    return this.state[0]!;
  }

  /** Update `weights[0..size)` in place from `grads[0..size)` at learning rate `lr`. */
  step(weights: Float32Array, grads: Float32Array, lr: number): void {
    switch (this.opts.name) {
      case 'adam':
        this.adam(weights, grads, lr);
        break;
      case 'sgd':
        this.sgd(weights, grads, lr);
        break;
      case 'adadelta':
        this.adadelta(weights, grads, lr);
        break;
    }
    this.state[0] = this.iterations + 1;
  }

  private adam(w: Float32Array, g: Float32Array, lr: number): void {
    const [m, v] = this.slots as [Float32Array, Float32Array];
    const t = this.iterations + 1;
    // tfjs's lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps), with the divisions hoisted out of the loop.
    const stepSize = lr / (1 - Math.pow(BETA1, t));
    const inverseCorrection2 = 1 / (1 - Math.pow(BETA2, t));
    const n = this.size;
    for (let i = 0; i < n; i++) {
      const gi = g[i]!;
      const mi = BETA1 * m[i]! + (1 - BETA1) * gi;
      const vi = BETA2 * v[i]! + (1 - BETA2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      w[i] = w[i]! - (stepSize * mi) / (Math.sqrt(vi * inverseCorrection2) + EPSILON);
    }
  }

  private sgd(w: Float32Array, g: Float32Array, lr: number): void {
    const accumulation = this.slots[0];
    if (!accumulation) {
      for (let i = 0, n = this.size; i < n; i++) w[i] = w[i]! - lr * g[i]!;
      return;
    }
    const momentum = this.opts.momentum ?? 0.9;
    const n = this.size;
    for (let i = 0; i < n; i++) {
      const a = momentum * accumulation[i]! + g[i]!;
      accumulation[i] = a;
      w[i] = w[i]! - lr * a;
    }
  }

  /** As tfjs: the update divides by the accumulated gradients of the previous step. */
  private adadelta(w: Float32Array, g: Float32Array, lr: number): void {
    const [accGrad, accUpdate] = this.slots as [Float32Array, Float32Array];
    const n = this.size;
    for (let i = 0; i < n; i++) {
      const gi = g[i]!;
      const update = (Math.sqrt(accUpdate[i]! + EPSILON) / Math.sqrt(accGrad[i]! + EPSILON)) * gi;
      accGrad[i] = RHO * accGrad[i]! + (1 - RHO) * gi * gi;
      accUpdate[i] = RHO * accUpdate[i]! + (1 - RHO) * update * update;
      w[i] = w[i]! - lr * update;
    }
  }
}
