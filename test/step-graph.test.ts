/**
 * The compiled training step (tensorflow backend): the protobuf encoding it writes, and a compiled replica against
 * the op-by-op one on the same batches and weights.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { ProtoWriter } from '../shared/tf/proto-writer.js';
import { encodeSavedModel } from '../shared/tf/graph-def.js';
import { activeNativeBackend } from '../shared/tf/native-binding.js';
import { nativeInstallDir } from '../shared/tf/native-paths.js';
import { UntraceableStepError } from '../shared/errors.js';
import { graphOfTrace, recordBinding } from '../shared/tf/step-trace.js';
import { buildModel, withSoftmax, type ModelName } from '../shared/train/models.js';
import { Replica, type Batch } from '../shared/train/replica.js';
import type { CompileOutcome } from '../shared/train/step-compiler.js';
import { availableBackends } from './helpers/backends.js';

const HAS_TENSORFLOW = (await availableBackends()).includes('tensorflow');
const SKIP = HAS_TENSORFLOW ? false : 'the tensorflow backend is not installed here';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('protobuf writer', () => {
  test('varints, negative int64, floats, strings, nested and packed fields', () => {
    assert.equal(hex(new ProtoWriter().varint(1, 150).finish()), '089601');
    assert.equal(hex(new ProtoWriter().varint(3, -1).finish()), '18ffffffffffffffffff01');
    assert.equal(hex(new ProtoWriter().varint(5, true).finish()), '2801');
    assert.equal(hex(new ProtoWriter().float(4, 1).finish()), '250000803f');
    assert.equal(hex(new ProtoWriter().string(2, 'testing').finish()), '120774657374696e67');
    assert.equal(hex(new ProtoWriter().message(3, (m) => m.varint(1, 150)).finish()), '1a03089601');
    assert.equal(hex(new ProtoWriter().packedVarints(4, [3, 270, 86942]).finish()), '2206038e029ea705');
  });

  test('grows past its first buffer', () => {
    const big = new Uint8Array(10_000).fill(7);
    const out = new ProtoWriter().bytes(1, big).finish();
    assert.equal(out.length, 1 + 2 + big.length);
    assert.equal(out[out.length - 1], 7);
  });
});

function randomBatch(n: number, seed: number): Batch {
  let s = seed;
  const next = (): number => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  return {
    images: Float32Array.from({ length: n * 784 }, next),
    labels: Int32Array.from({ length: n }, () => Math.floor(next() * 10)),
    n,
  };
}

/** The largest |a - b| relative to the largest |a|. */
function relativeDifference(a: Float32Array, b: Float32Array): number {
  let scale = 1e-12;
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!));
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  }
  return diff / scale;
}

describe('compiled training step on tensorflow', { skip: SKIP }, () => {
  before(async () => {
    assert.ok(await tf.setBackend('tensorflow'));
  });

  test('the SavedModel it writes decodes with TensorFlow protos (tfjs-node copy)', () => {
    const require = createRequire(import.meta.url);
    const messages = require(path.join(nativeInstallDir(), 'dist', 'proto', 'api_pb.js')) as {
      SavedModel: { deserializeBinary(b: Uint8Array): { toObject(): unknown } };
    };
    const bytes = encodeSavedModel(
      [
        { name: 'x', op: 'Placeholder', inputs: [], attrs: { dtype: { type: 1 } } },
        { name: 'y', op: 'Relu', inputs: ['x'], attrs: { T: { type: 1 }, k: { i: [1, 2, 2, 1] }, p: { s: 'SAME' } } },
      ],
      ['t'],
    );
    const decoded = messages.SavedModel.deserializeBinary(bytes).toObject() as {
      metaGraphsList: { metaInfoDef: { tagsList: string[] }; graphDef: { nodeList: unknown[] } }[];
    };
    const meta = decoded.metaGraphsList[0]!;
    assert.deepEqual(meta.metaInfoDef.tagsList, ['t']);
    const relu = meta.graphDef.nodeList[1] as { name: string; op: string; inputList: string[]; attrMap: unknown[] };
    assert.deepEqual([relu.name, relu.op, relu.inputList], ['y', 'Relu', ['x']]);
    const attrs = new Map(relu.attrMap as [string, { type: number; s: string; list?: { iList: number[] } }][]);
    assert.equal(attrs.get('T')!.type, 1);
    assert.deepEqual(attrs.get('k')!.list!.iList, [1, 2, 2, 1]);
    assert.equal(Buffer.from(attrs.get('p')!.s, 'base64').toString(), 'SAME');
  });

  for (const name of ['lenet5', 'mlp'] as ModelName[]) {
    test(`${name}: the compiled step gives the op-by-op step's loss and gradients, step after step`, () => {
      const outcomes: CompileOutcome[] = [];
      const compiled = new Replica(
        buildModel(name, 3),
        { name: 'adam', lr: 1e-3 },
        { onCompile: (o) => outcomes.push(o) },
      );
      const eager = new Replica(buildModel(name, 3), { name: 'adam', lr: 1e-3 }, { compileStep: false });
      for (let step = 0; step < 5; step++) {
        const batch = randomBatch(16, 100 + step);
        const a = eager.computeGradients(batch);
        const ga = a.gradients.slice();
        const b = compiled.computeGradients(batch);
        assert.ok(Math.abs(a.loss - b.loss) <= 1e-4 * Math.abs(a.loss), `step ${step}: loss ${a.loss} vs ${b.loss}`);
        const diff = relativeDifference(ga, b.gradients);
        assert.ok(diff < 1e-4, `step ${step}: gradients differ by ${diff}`);
        // The same update on both, so the weights stay equal and the next step compares like with like.
        eager.applyGradients(ga);
        compiled.applyGradients(ga);
      }
      assert.deepEqual(outcomes, [{ batchSize: 16, compiled: true, ops: outcomes[0]?.ops }]);
      assert.ok(outcomes[0]!.ops! > 10);
      // The variables catch up with the buffer before anyone reads the model.
      assert.deepEqual(
        compiled.built.logitsModel.getWeights()[0]!.dataSync(),
        eager.built.logitsModel.getWeights()[0]!.dataSync(),
      );
      compiled.dispose();
      eager.dispose();
    });
  }

  test('each batch size gets its own graph; evaluate sees the latest weights', () => {
    const outcomes: CompileOutcome[] = [];
    const r = new Replica(buildModel('mlp', 4), { name: 'sgd', lr: 0.1 }, { onCompile: (o) => outcomes.push(o) });
    for (const n of [8, 8, 8, 5, 5, 5]) r.applyGradients(r.computeGradients(randomBatch(n, n)).gradients.slice());
    assert.deepEqual(
      outcomes.map((o) => [o.batchSize, o.compiled]),
      [
        [8, true],
        [5, true],
      ],
    );
    const e = new Replica(buildModel('mlp', 4), { name: 'sgd', lr: 0.1 }, { compileStep: false });
    e.setWeights(r.getWeights());
    assert.deepEqual(r.evaluate(randomBatch(20, 9)), e.evaluate(randomBatch(20, 9)));
    r.dispose();
    e.dispose();
  });

  /** A small functional model: flatten, dense 16, then `middle`, then dense 10 (logits). */
  function smallModel(name: string, middle: tf.layers.Layer[]): Replica['built'] {
    const input = tf.input({ shape: [28, 28, 1] });
    let x = tf.layers.flatten().apply(input) as tf.SymbolicTensor;
    x = tf.layers.dense({ units: 16, activation: 'relu' }).apply(x) as tf.SymbolicTensor;
    for (const layer of middle) x = layer.apply(x) as tf.SymbolicTensor;
    const logits = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 10 }).apply(x) as tf.SymbolicTensor });
    return { name, logitsModel: logits, model: withSoftmax(logits, name) };
  }

  test('dropout compiles: the graph draws a fresh mask every step', () => {
    const outcomes: CompileOutcome[] = [];
    const built = smallModel('dropout', [tf.layers.dropout({ rate: 0.5 })]);
    const r = new Replica(built, { name: 'sgd', lr: 0.1 }, { onCompile: (o) => outcomes.push(o) });
    const batch = randomBatch(8, 1);
    for (let i = 0; i < 3; i++) r.computeGradients(batch);
    assert.deepEqual(
      outcomes.map((o) => o.compiled),
      [true],
    );
    // Same batch, same weights: only the masks differ between these two compiled steps.
    const first = r.computeGradients(batch).gradients.slice();
    const second = r.computeGradients(batch).gradients;
    assert.ok(
      first.some((g, i) => g !== second[i]),
      'two compiled steps drew the same dropout mask',
    );
    r.dispose();
  });

  test('a random draw that is not uniform [0, 1) keeps the step op by op, and says why', () => {
    const outcomes: CompileOutcome[] = [];
    const built = smallModel('noise', [tf.layers.gaussianNoise({ stddev: 0.5 })]);
    const r = new Replica(built, { name: 'sgd', lr: 0.1 }, { onCompile: (o) => outcomes.push(o) });
    for (let i = 0; i < 4; i++) r.computeGradients(randomBatch(8, i));
    assert.equal(outcomes.length, 1);
    assert.equal(outcomes[0]!.compiled, false);
    assert.match(outcomes[0]!.reason!, /different programs: op \d+ .* constant input/);
    r.dispose();
  });

  test('BatchNormalization compiles: the graph returns the moving statistics, as the op-by-op step does', () => {
    const outcomes: CompileOutcome[] = [];
    const bn = (): Replica['built'] => smallModel('bn', [tf.layers.batchNormalization()]);
    const compiled = new Replica(bn(), { name: 'sgd', lr: 0.1 }, { onCompile: (o) => outcomes.push(o) });
    const eager = new Replica(bn(), { name: 'sgd', lr: 0.1 }, { compileStep: false });
    eager.setWeights(compiled.getWeights());
    assert.ok(compiled.stateSize > 0);
    for (let step = 0; step < 4; step++) {
      const batch = randomBatch(16, 50 + step);
      const a = eager.computeGradients(batch).gradients.slice();
      const b = compiled.computeGradients(batch).gradients;
      const state = (g: Float32Array): Float32Array => g.subarray(g.length - compiled.stateSize);
      assert.ok(relativeDifference(a, b) < 1e-3, `step ${step}: updates differ by ${relativeDifference(a, b)}`);
      assert.ok(
        state(a).some((v) => v !== 0),
        'the step moved the statistics',
      );
      assert.ok(relativeDifference(state(a), state(b)) < 1e-3, `step ${step}: statistics differ`);
      eager.applyGradients(a);
      compiled.applyGradients(a);
    }
    assert.equal(outcomes[0]?.compiled, true);
    compiled.dispose();
    eager.dispose();
  });

  test('a compiled step that fails at run time falls back to op by op for good, losing no step', () => {
    const outcomes: CompileOutcome[] = [];
    const r = new Replica(buildModel('mlp', 5), { name: 'sgd', lr: 0.1 }, { onCompile: (o) => outcomes.push(o) });
    const e = new Replica(buildModel('mlp', 5), { name: 'sgd', lr: 0.1 }, { compileStep: false });
    for (let i = 0; i < 3; i++) r.computeGradients(randomBatch(8, i));
    // Pull the session from under the replica: its next run throws inside libtensorflow's binding.
    (r as unknown as { compiler: { compiled(n: number): { dispose(): void } } }).compiler.compiled(8).dispose();
    const batch = randomBatch(8, 42);
    const got = r.computeGradients(batch);
    assert.ok(relativeDifference(e.computeGradients(batch).gradients.slice(), got.gradients) < 1e-5);
    assert.deepEqual(
      outcomes.map((o) => o.compiled),
      [true, false],
    );
    assert.match(outcomes[1]!.reason!, /the compiled step failed/);
    r.dispose();
    e.dispose();
  });

  test('a step that reads a value back into JavaScript midway is refused', () => {
    const backend = activeNativeBackend()!;
    const { trace } = recordBinding(backend, () =>
      tf.tidy(() => {
        const a = tf.add(tf.tensor1d([1, 2]), 1);
        const k = a.dataSync()[0]!;
        return tf.mul(a, k);
      }),
    );
    assert.throws(
      () => graphOfTrace(backend.binding, trace, new Map(), []),
      (err: unknown) => err instanceof UntraceableStepError && err.code === 'STEP_UNTRACEABLE',
    );
  });
});
