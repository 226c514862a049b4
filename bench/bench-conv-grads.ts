/**
 * Benchmark of ringtrain's wasm training kernels (shared/tf/wasm-conv-grads.ts): convolution gradients, plus the
 * matMul and max-pool gradient wrappers that whole training steps exercise.
 *
 * Prints, per convolution of LeNet-5 and of the Keras MNIST CNN at batch 64: ms per call of the forward Conv2D, of
 * wasm's built-in Conv2DBackpropInput (for the record, measured before ours replaces it), and of our
 * Conv2DBackpropInput and Conv2DBackpropFilter. Then full training steps (Adam, categorical cross-entropy,
 * optimizer.minimize) of both models in samples/s against the project targets, with a per-kernel profile of each
 * step (self time, so a gradient kernel does not also count the convolutions it runs). Training also reports the
 * process's CPU time per step: wasm computes on one thread, so when the wall time is well above it, other work on the
 * machine was competing for the cores.
 *
 * Run: node dist/bench/bench-conv-grads.js
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmConvGradients } from '../shared/tf/wasm-conv-grads.js';
import { buildModel, type ModelName } from '../shared/train/models.js';

type Shape4D = [number, number, number, number];

interface ConvCase {
  name: string;
  x: Shape4D;
  filter: Shape4D;
  pad: 'same' | 'valid';
}

const BATCH = 64;
const CASES: readonly ConvCase[] = [
  { name: 'lenet5 conv1', x: [BATCH, 28, 28, 1], filter: [5, 5, 1, 6], pad: 'same' },
  { name: 'lenet5 conv2', x: [BATCH, 14, 14, 6], filter: [5, 5, 6, 16], pad: 'valid' },
  { name: 'keras-cnn conv1', x: [BATCH, 28, 28, 1], filter: [3, 3, 1, 32], pad: 'valid' },
  { name: 'keras-cnn conv2', x: [BATCH, 26, 26, 32], filter: [3, 3, 32, 64], pad: 'valid' },
];

/** Median ms per call: one warm-up call, then at least 3 and at most 25 calls, stopping after ~1.5 s. */
function msPerCall(fn: () => tf.Tensor): number {
  tf.dispose(fn());
  const times: number[] = [];
  const deadline = performance.now() + 1500;
  while (times.length < 3 || (times.length < 25 && performance.now() < deadline)) {
    const start = performance.now();
    const out = fn();
    times.push(performance.now() - start); // wasm kernels run synchronously: the work is done on return.
    out.dispose();
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

interface CaseTensors {
  x: tf.Tensor4D;
  filter: tf.Tensor4D;
  dy: tf.Tensor4D;
}

function makeCase(c: ConvCase): CaseTensors {
  const x = tf.randomNormal(c.x) as tf.Tensor4D;
  const filter = tf.randomNormal(c.filter) as tf.Tensor4D;
  const dy = tf.tidy(() => tf.randomNormal(tf.conv2d(x, filter, 1, c.pad).shape)) as tf.Tensor4D;
  return { x, filter, dy };
}

function backpropInput(c: ConvCase, t: CaseTensors): tf.Tensor {
  return tf
    .engine()
    .runKernel(
      tf.Conv2DBackpropInput,
      { dy: t.dy, filter: t.filter },
      { strides: 1, pad: c.pad, dataFormat: 'NHWC', inputShape: c.x },
    ) as tf.Tensor;
}

function backpropFilter(c: ConvCase, t: CaseTensors): tf.Tensor {
  return tf
    .engine()
    .runKernel(
      tf.Conv2DBackpropFilter,
      { x: t.x, dy: t.dy },
      { strides: 1, pad: c.pad, dataFormat: 'NHWC', filterShape: c.filter },
    ) as tf.Tensor;
}

function benchKernels(): void {
  const tensors = CASES.map(makeCase);
  const builtin = CASES.map((c, i) => msPerCall(() => backpropInput(c, tensors[i])));
  registerWasmConvGradients();
  console.log('kernel ms per call (median), batch 64');
  console.log(
    `${'case'.padEnd(17)}${'forward'.padStart(9)}${'dx builtin'.padStart(12)}${'dx ours'.padStart(9)}` +
      `${'dW ours'.padStart(9)}`,
  );
  CASES.forEach((c, i) => {
    const t = tensors[i];
    const forward = msPerCall(() => tf.conv2d(t.x, t.filter, 1, c.pad));
    const dx = msPerCall(() => backpropInput(c, t));
    const dW = msPerCall(() => backpropFilter(c, t));
    console.log(
      `${c.name.padEnd(17)}${forward.toFixed(2).padStart(9)}${builtin[i].toFixed(2).padStart(12)}` +
        `${dx.toFixed(2).padStart(9)}${dW.toFixed(2).padStart(9)}`,
    );
  });
  tensors.forEach((t) => tf.dispose([t.x, t.filter, t.dy]));
}

interface StepHarness {
  step: () => void;
  dispose: () => void;
}

function trainingStep(model: tf.LayersModel): StepHarness {
  const optimizer = tf.train.adam();
  const xs = tf.randomUniform([BATCH, 28, 28, 1]);
  const ys = tf.tidy(() => tf.oneHot(tf.randomUniform([BATCH], 0, 10, 'int32') as tf.Tensor1D, 10).toFloat());
  const step = (): void => {
    const loss = optimizer.minimize(
      () =>
        tf.tidy(() => {
          const probs = model.apply(xs, { training: true }) as tf.Tensor;
          return tf.mean(tf.metrics.categoricalCrossentropy(ys, probs)) as tf.Scalar;
        }),
      true,
    );
    loss?.dispose();
  };
  return {
    step,
    dispose: () => {
      tf.dispose([xs, ys]);
      optimizer.dispose();
      model.dispose();
    },
  };
}

/** Self time per kernel name, collected by wrapping every registered wasm kernel while `run` executes. */
function profileKernels(run: () => void): Map<string, { calls: number; ms: number }> {
  const totals = new Map<string, { calls: number; ms: number }>();
  const childMs: number[] = [];
  const originals = tf.getKernelsForBackend('wasm');
  for (const config of originals) {
    tf.unregisterKernel(config.kernelName, 'wasm');
    tf.registerKernel({
      ...config,
      setupFunc: undefined,
      kernelFunc: (args) => {
        childMs.push(0);
        const start = performance.now();
        const out = config.kernelFunc(args);
        const elapsed = performance.now() - start;
        const self = elapsed - (childMs.pop() ?? 0);
        if (childMs.length > 0) childMs[childMs.length - 1] += elapsed;
        const entry = totals.get(config.kernelName) ?? { calls: 0, ms: 0 };
        entry.calls++;
        entry.ms += self;
        totals.set(config.kernelName, entry);
        return out;
      },
    });
  }
  try {
    run();
  } finally {
    for (const config of originals) {
      tf.unregisterKernel(config.kernelName, 'wasm');
      tf.registerKernel(config);
    }
  }
  return totals;
}

function printProfile(totals: Map<string, { calls: number; ms: number }>, steps: number): void {
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const all = rows.reduce((sum, [, e]) => sum + e.ms, 0);
  console.log(`  kernel self time per step (${(all / steps).toFixed(1)} ms in kernels):`);
  for (const [name, e] of rows.slice(0, 12)) {
    console.log(
      `    ${name.padEnd(22)}${(e.ms / steps).toFixed(2).padStart(8)} ms ` +
        `${((100 * e.ms) / all).toFixed(1).padStart(5)}%  ${(e.calls / steps).toFixed(0).padStart(3)} calls`,
    );
  }
}

/**
 * CPU time of this process in ms, all threads (so GC included): on a machine busy with other work it tells the work
 * apart from the wait for a core.
 */
function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

function benchTraining(name: ModelName, steps: number, target: number): void {
  // The probabilities model, trained on categorical cross-entropy, as a Keras user would write the step.
  const harness = trainingStep(buildModel(name).model);
  for (let i = 0; i < 3; i++) harness.step();
  const tensorsBefore = tf.memory().numTensors;
  const startCpu = cpuMs();
  const start = performance.now();
  for (let i = 0; i < steps; i++) harness.step();
  const ms = (performance.now() - start) / steps;
  const msCpu = (cpuMs() - startCpu) / steps;
  const leaked = tf.memory().numTensors - tensorsBefore;
  const samplesPerSec = (BATCH * 1000) / ms;
  const verdict = samplesPerSec >= target ? 'meets' : 'BELOW';
  console.log(
    `${name} training step, batch ${BATCH}: ${ms.toFixed(1)} ms/step, ${samplesPerSec.toFixed(0)} samples/s ` +
      `(${verdict} target ${target}); process CPU time ${msCpu.toFixed(1)} ms/step; ` +
      `tensors leaked over ${steps} steps: ${leaked}`,
  );
  const profiledSteps = Math.max(2, Math.floor(steps / 4));
  printProfile(
    profileKernels(() => {
      for (let i = 0; i < profiledSteps; i++) harness.step();
    }),
    profiledSteps,
  );
  harness.dispose();
}

async function main(): Promise<void> {
  tf.enableProdMode();
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not start');
  await tf.ready();
  const flags = tf.env().features;
  console.log(
    `backend wasm, simd ${String(flags['WASM_HAS_SIMD_SUPPORT'])}, ` +
      `threads ${String(flags['WASM_HAS_MULTITHREAD_SUPPORT'])}`,
  );
  benchKernels();
  benchTraining('lenet5', 40, 1200);
  benchTraining('keras-cnn', 10, 200);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
