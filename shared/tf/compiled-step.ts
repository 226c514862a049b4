/**
 * A training step's gradients computed by one libtensorflow session call (the `tensorflow` backend only).
 *
 * The graph is the recording of tfjs-node's own eager step (step-trace.ts), so it computes what the eager step
 * computes, with tfjs's gradients; TensorFlow's graph optimiser and oneDNN's graph kernels then run it. It is loaded
 * as a SavedModel with no variables: the weights are fed at every call from the replica's flat buffer, so the
 * variables need no update between steps.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodeSavedModel, type ConstTensor } from './graph-def.js';
import type { NativeBinding } from './native-binding.js';
import { graphOfTrace, type GraphInput, type StepTrace } from './step-trace.js';

const TAG = 'ringtrain-train-step';

/** Where each weight sits in the flat buffer, in feed order. */
export interface FeedEntry {
  shape: readonly number[];
  offset: number;
  size: number;
}

/** What one traced step fed and fetched, by binding id. */
export interface TracedStepIo {
  images: number;
  labels: number;
  /** Every weight the step read, trainable then state, in feed order. */
  weights: readonly number[];
  loss: number;
  /** One per trainable weight (the first gradients.length feeds). */
  gradients: readonly number[];
  /** The state weights' new values (BatchNormalization's moving statistics), one per remaining feed. */
  stateAfter: readonly number[];
}

export class CompiledStep {
  private disposed = false;

  private constructor(
    private readonly binding: NativeBinding,
    private readonly modelId: number,
    private readonly inputNames: string[],
    private readonly outputNames: string,
    private readonly imageShape: readonly number[],
    private readonly weights: readonly FeedEntry[],
    private readonly trainable: number,
    private readonly draws: { name: string; recorded: ConstTensor }[],
  ) {}

  /** Build the graph of a traced step and load it into a session. Throws UntraceableStepError or libtensorflow's. */
  static load(
    binding: NativeBinding,
    trace: StepTrace,
    io: TracedStepIo,
    imageShape: readonly number[],
    weights: readonly FeedEntry[],
    random: ReadonlySet<number>,
  ): CompiledStep {
    const inputs = new Map<number, GraphInput>([
      [io.images, { name: 'images', dtype: binding.TF_FLOAT }],
      [io.labels, { name: 'labels', dtype: binding.TF_INT32 }],
    ]);
    for (const [i, id] of io.weights.entries()) {
      inputs.set(id, { name: `weight_${i}`, dtype: binding.TF_FLOAT });
    }
    const fetched = [io.loss, ...io.gradients, ...io.stateAfter];
    const graph = graphOfTrace(binding, trace, inputs, fetched, random);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-step-'));
    try {
      fs.writeFileSync(path.join(dir, 'saved_model.pb'), encodeSavedModel(graph.nodes, [TAG]));
      const modelId = binding.loadSavedModel(dir, TAG);
      const names = [...inputs.values()].map((i) => i.name);
      const outputs = graph.outputs.join(',');
      return new CompiledStep(binding, modelId, names, outputs, imageShape, weights, io.gradients.length, graph.random);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Samples per call: the graph's batch dimension. */
  get batchSize(): number {
    return this.imageShape[0]!;
  }

  /**
   * Loss of the batch; the update goes to `out` at the weights' offsets: gradients, then each state weight's change.
   * `replayDraws` feeds the traced step's own random draws instead of fresh ones (to check the graph against it).
   */
  run(images: Float32Array, labels: Int32Array, weights: Float32Array, out: Float32Array, replayDraws = false): number {
    const b = this.binding;
    const n = this.batchSize;
    const pixels = n * this.imageShape.slice(1).reduce((a, c) => a * c, 1);
    const names = replayDraws ? [...this.inputNames, ...this.draws.map((d) => d.name)] : this.inputNames;
    const ids = [
      b.createTensor(this.imageShape.slice(), b.TF_FLOAT, images.subarray(0, pixels)),
      b.createTensor([n], b.TF_INT32, labels.subarray(0, n)),
      ...this.weights.map((w) =>
        b.createTensor(w.shape.slice(), b.TF_FLOAT, weights.subarray(w.offset, w.offset + w.size)),
      ),
      ...(replayDraws
        ? this.draws.map((d) => b.createTensor(d.recorded.shape.slice(), b.TF_FLOAT, floatsOf(d.recorded)))
        : []),
    ];
    let fetched: { id: number }[] = [];
    try {
      fetched = b.runSavedModel(this.modelId, ids, names.join(','), this.outputNames);
      for (const [i, w] of this.weights.entries()) {
        const values = b.tensorDataSync(fetched[i + 1]!.id) as Float32Array;
        if (i < this.trainable) out.set(values, w.offset);
        else for (let j = 0; j < w.size; j++) out[w.offset + j] = values[j]! - weights[w.offset + j]!;
      }
      return b.tensorDataSync(fetched[0]!.id)[0]!;
    } finally {
      for (const id of ids) b.deleteTensor(id);
      for (const t of fetched) b.deleteTensor(t.id);
    }
  }

  /** Close the session; once, and quietly for a session libtensorflow already lost. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    try {
      this.binding.deleteSavedModel(this.modelId);
    } catch {
      // Nothing is left to free.
    }
  }
}

function floatsOf(t: ConstTensor): Float32Array {
  return new Float32Array(t.content.buffer, t.content.byteOffset, t.content.byteLength / 4);
}
