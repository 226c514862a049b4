/**
 * When a replica's gradients come from one compiled graph instead of eager ops (the `tensorflow` backend).
 *
 * Per batch size: the first two steps run eagerly and are recorded; when both recorded the same program (up to
 * their dropout draws), the graph is built from the second and loaded, and it must give the second step's update
 * again, fed that step's draws (within float round-off: TensorFlow's graph kernels sum in other orders), before it
 * is used. From then on that batch size runs
 * compiled. A step that cannot be compiled, or a graph that disagrees, leaves that batch size eager, with the reason.
 * Either way the update stays the JavaScript optimizer's, so replicas stay identical whichever way each computes.
 */
import type * as tf from '@tensorflow/tfjs';
import { CompiledStep, type FeedEntry, type TracedStepIo } from '../tf/compiled-step.js';
import { nativeIdOf, type NativeBackend } from '../tf/native-binding.js';
import { UntraceableStepError } from '../errors.js';
import { compareTraces, recordBinding, type StepTrace } from '../tf/step-trace.js';

/** The tensors of one eager step that the graph feeds and fetches. */
export interface StepTensors {
  images: tf.Tensor;
  labels: tf.Tensor;
  /** The trainable weights, then the state weights as the step found them. */
  weights: readonly tf.Tensor[];
  loss: tf.Tensor;
  /** One per trainable weight. */
  gradients: readonly tf.Tensor[];
  /** The state weights as the forward pass left them. */
  stateAfter: readonly tf.Tensor[];
}

export interface CompileOutcome {
  batchSize: number;
  compiled: boolean;
  /** Why not, when not compiled. */
  reason?: string;
  ops?: number;
}

interface Recorded {
  trace: StepTrace;
  ids: TracedStepIo;
}

type Slot = { recorded: Recorded[] } | { step: CompiledStep } | { eager: string };

/** Largest difference allowed between the graph's and the eager step's gradients, relative to the largest one. */
const AGREEMENT = 1e-3;

export class StepCompiler {
  private readonly slots = new Map<number, Slot>();

  constructor(
    private readonly backend: NativeBackend,
    private readonly feeds: readonly FeedEntry[],
    private readonly sampleShape: readonly number[],
    private readonly onOutcome: (o: CompileOutcome) => void = () => {},
  ) {}

  /** The compiled step for this batch size, once it exists. */
  compiled(n: number): CompiledStep | undefined {
    const slot = this.slots.get(n);
    return slot && 'step' in slot ? slot.step : undefined;
  }

  /** Run an eager step, recorded while the graph of this batch size is still being made. */
  eager<T extends StepTensors>(n: number, step: () => T): T {
    const slot = this.slots.get(n) ?? { recorded: [] };
    this.slots.set(n, slot);
    if (!('recorded' in slot)) return step();
    const { result, trace } = recordBinding(this.backend, step);
    const id = (t: tf.Tensor): number => nativeIdOf(this.backend, t);
    const ids: TracedStepIo = {
      images: id(result.images),
      labels: id(result.labels),
      weights: result.weights.map(id),
      loss: id(result.loss),
      gradients: result.gradients.map(id),
      stateAfter: result.stateAfter.map(id),
    };
    // The graph feeds these; a copy of their values (the weights, when tfjs made them during the step) is not kept.
    for (const fed of [ids.images, ids.labels, ...ids.weights]) trace.created.delete(fed);
    slot.recorded.push({ trace, ids });
    return result;
  }

  /**
   * After an eager step of batch size n: when two were recorded, compile, and check the graph against that step's
   * own gradients (`expected`, with the weights and batch it was given).
   */
  settle(
    n: number,
    batch: { images: Float32Array; labels: Int32Array },
    weights: Float32Array,
    expected: Float32Array,
  ): void {
    const slot = this.slots.get(n);
    if (!slot || !('recorded' in slot) || slot.recorded.length < 2) return;
    const [a, b] = slot.recorded as [Recorded, Recorded];
    const fed = (r: Recorded): Map<number, string> =>
      new Map([
        [r.ids.images, 'images'],
        [r.ids.labels, 'labels'],
        ...r.ids.weights.map((id, i): [number, string] => [id, `weight ${i}`]),
      ]);
    const comparison = compareTraces(a.trace, fed(a), b.trace, fed(b));
    if (!comparison.same) return this.refuse(n, `two steps ran different programs: ${comparison.why}`);
    let step: CompiledStep;
    try {
      const shape = [n, ...this.sampleShape];
      step = CompiledStep.load(this.backend.binding, b.trace, b.ids, shape, this.feeds, comparison.random);
    } catch (err) {
      return this.refuse(n, err instanceof UntraceableStepError ? err.reason : (err as Error).message);
    }
    const got = new Float32Array(expected.length);
    step.run(batch.images, batch.labels, weights, got, true);
    const worst = largestDifference(this.feeds, expected, got);
    if (!(worst <= AGREEMENT)) {
      step.dispose();
      return this.refuse(n, `its gradients differ from the eager step's by ${worst.toExponential(2)} (relative)`);
    }
    this.slots.set(n, { step });
    this.onOutcome({ batchSize: n, compiled: true, ops: b.trace.ops.length });
  }

  /** Give up the compiled step of this batch size (it failed at run time). */
  demote(n: number, reason: string): void {
    this.compiled(n)?.dispose();
    this.refuse(n, reason);
  }

  private refuse(n: number, reason: string): void {
    this.slots.set(n, { eager: reason });
    this.onOutcome({ batchSize: n, compiled: false, reason });
  }

  dispose(): void {
    for (const slot of this.slots.values()) if ('step' in slot) slot.step.dispose();
    this.slots.clear();
  }
}

/** Per weight, the largest |a - b| over the largest |a|; the worst weight's figure. */
function largestDifference(feeds: readonly FeedEntry[], a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (const f of feeds) {
    let scale = 1e-12;
    let diff = 0;
    for (let i = f.offset; i < f.offset + f.size; i++) {
      scale = Math.max(scale, Math.abs(a[i]!));
      diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    }
    worst = Math.max(worst, diff / scale);
  }
  return worst;
}
