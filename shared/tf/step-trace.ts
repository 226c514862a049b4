/**
 * Recording what tfjs-node executes, and replaying it as one TensorFlow graph.
 *
 * tfjs-node runs every kernel, gradients included, as an eager TensorFlow op through its binding (executeOp), and
 * hands JavaScript values to TensorFlow through createTensor. A training step for a fixed batch shape is a
 * straight-line program: the same ops on the same shapes every time. So one eager step, recorded at the binding,
 * is that program: its ops become graph nodes, the tensors it was given become placeholders (images, labels,
 * weights) or constants (shapes, scalars, anything else the step made from JavaScript values), and the gradients'
 * tensors become the graph's outputs. libtensorflow then runs the whole step in one session call, with its graph
 * optimisations and oneDNN's graph kernels, instead of one binding call and one eager dispatch per op.
 *
 * A step that reads a value back into JavaScript in the middle (tensorDataSync) depends on data the graph cannot
 * see, and is refused; so is one whose recorded constants differ between two steps (`compareTraces`), except for
 * uniform draws in [0, 1) (tfjs's dropout masks, drawn in JavaScript), which the graph draws itself with
 * TensorFlow's RandomUniform: a fresh mask every step, as the eager step has.
 */
import type { Attr, ConstTensor, GraphNode } from './graph-def.js';
import type { NativeBinding, OpAttr, TensorMetadata } from './native-binding.js';
import { UntraceableStepError } from '../errors.js';

export interface TracedOp {
  op: string;
  attrs: OpAttr[];
  inputs: number[];
  outputs: TensorMetadata[];
}

export interface StepTrace {
  ops: TracedOp[];
  /** Tensors made from JavaScript values during the step, by binding id. */
  created: Map<number, ConstTensor>;
  /** Set when the step read a tensor back into JavaScript: it cannot be replayed as a graph. */
  readBack: boolean;
}

function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}

/**
 * Run `fn` with the binding's calls recorded. The backend object keeps its binding in a writable property, so the
 * recorder stands in for it for the duration of the call (the native functions themselves are read-only).
 */
export function recordBinding<T>(holder: { binding: NativeBinding }, fn: () => T): { result: T; trace: StepTrace } {
  const real = holder.binding;
  const trace: StepTrace = { ops: [], created: new Map(), readBack: false };
  const overrides: Pick<NativeBinding, 'createTensor' | 'executeOp' | 'tensorDataSync'> = {
    createTensor: (shape, dtype, values) => {
      const id = real.createTensor(shape, dtype, values);
      trace.created.set(id, { dtype, shape: shape.slice(), content: bytesOf(values) });
      return id;
    },
    executeOp: (op, attrs, inputs, numOutputs) => {
      const outputs = real.executeOp(op, attrs, inputs, numOutputs);
      trace.ops.push({ op, attrs, inputs: inputs.slice(), outputs });
      return outputs;
    },
    tensorDataSync: (id) => {
      trace.readBack = true;
      return real.tensorDataSync(id);
    },
  };
  // The binding's own properties are read-only, so the recorder defines its own over them rather than assigning.
  const recorder = Object.create(real, Object.getOwnPropertyDescriptors(overrides)) as NativeBinding;
  holder.binding = recorder;
  try {
    return { result: fn(), trace };
  } finally {
    holder.binding = real;
  }
}

/** How two recordings of a step compare: the same program, except perhaps for its random draws. */
export type TraceComparison = { same: true; random: Set<number> } | { same: false; why: string };

const FLOAT32 = 1;

/** A float32 constant whose values all lie in [0, 1): what tfjs's randomUniform(shape, 0, 1) draws. */
function isUniformDraw(t: ConstTensor): boolean {
  if (t.dtype !== FLOAT32) return false;
  const values = new Float32Array(t.content.buffer, t.content.byteOffset, t.content.byteLength / 4);
  return values.every((v) => v >= 0 && v < 1);
}

/**
 * Compare two recordings op by op. `fedA`/`fedB` name each step's fed tensors (images, labels, weights) by role.
 * Tensors an op made stand for their position; JavaScript constants must be equal, except uniform [0, 1) draws
 * that differ (dropout's masks): those are returned, by their binding id in `b`, to be drawn by the graph itself.
 */
export function compareTraces(
  a: StepTrace,
  fedA: ReadonlyMap<number, string>,
  b: StepTrace,
  fedB: ReadonlyMap<number, string>,
): TraceComparison {
  if (a.ops.length !== b.ops.length) return { same: false, why: `${a.ops.length} ops, then ${b.ops.length}` };
  const localA = new Map<number, number>();
  const localB = new Map<number, number>();
  const random = new Set<number>();
  const mismatch = (k: number, what: string): TraceComparison => ({
    same: false,
    why: `op ${k} (${a.ops[k]!.op}) ${what} differs between two steps`,
  });
  for (const [k, opA] of a.ops.entries()) {
    const opB = b.ops[k]!;
    if (opA.op !== opB.op || JSON.stringify(opA.attrs) !== JSON.stringify(opB.attrs)) return mismatch(k, 'itself');
    if (opA.inputs.length !== opB.inputs.length) return mismatch(k, 'input count');
    for (const [j, idA] of opA.inputs.entries()) {
      const idB = opB.inputs[j]!;
      const madeA = fedA.has(idA) ? undefined : a.created.get(idA);
      const madeB = fedB.has(idB) ? undefined : b.created.get(idB);
      if (fedA.get(idA) !== fedB.get(idB) || !madeA !== !madeB) return mismatch(k, `input ${j}`);
      if (madeA && madeB) {
        if (madeA.dtype !== madeB.dtype || madeA.shape.join() !== madeB.shape.join()) return mismatch(k, `input ${j}`);
        if (Buffer.compare(madeA.content, madeB.content) === 0) continue;
        if (!isUniformDraw(madeA) || !isUniformDraw(madeB)) return mismatch(k, `constant input ${j}`);
        random.add(idB);
      } else if (!fedA.has(idA) && localA.get(idA) !== localB.get(idB)) {
        return mismatch(k, `input ${j}`);
      }
    }
    for (const [j, out] of opA.outputs.entries()) {
      localA.set(out.id, localA.size);
      localB.set(opB.outputs[j]!.id, localB.size);
    }
  }
  return { same: true, random };
}

function attrOf(binding: NativeBinding, a: OpAttr): Attr {
  const v = a.value;
  switch (a.type) {
    case binding.TF_ATTR_STRING:
      return { s: v as string };
    case binding.TF_ATTR_INT:
      return { i: v as number | number[] };
    case binding.TF_ATTR_FLOAT:
      return { f: v as number | number[] };
    case binding.TF_ATTR_BOOL:
      return { b: v as boolean | boolean[] };
    case binding.TF_ATTR_TYPE:
      return { type: v as number | number[] };
    case binding.TF_ATTR_SHAPE:
      return { shape: v as number[] };
    default:
      throw new UntraceableStepError(`attribute ${a.name} has a type (${a.type}) ringtrain does not encode`);
  }
}

/** A placeholder of the graph: what is fed at every run. */
export interface GraphInput {
  name: string;
  dtype: number;
}

export interface TracedGraph {
  nodes: GraphNode[];
  /** "node" or "node:k" of each requested output, in order. */
  outputs: string[];
  /** The graph's own uniform draws: each can be fed (PlaceholderWithDefault) with the values the trace drew. */
  random: { name: string; recorded: ConstTensor }[];
}

/** Nodes drawing a fresh uniform [0, 1) tensor of this shape at every run, unless `name` is fed. */
function uniformDrawNodes(name: string, shape: readonly number[]): GraphNode[] {
  const dims: ConstTensor = { dtype: 3, shape: [shape.length], content: new Uint8Array(Int32Array.from(shape).buffer) };
  return [
    { name: `${name}_shape`, op: 'Const', inputs: [], attrs: { dtype: { type: 3 }, value: { tensor: dims } } },
    {
      name: `${name}_draw`,
      op: 'RandomUniform',
      inputs: [`${name}_shape`],
      // Seeds 0: TensorFlow seeds the op at random, as tfjs's own dropout draws differ in every process.
      attrs: { dtype: { type: FLOAT32 }, T: { type: 3 }, seed: { i: 0 }, seed2: { i: 0 } },
    },
    {
      name,
      op: 'PlaceholderWithDefault',
      inputs: [`${name}_draw`],
      attrs: { dtype: { type: FLOAT32 }, shape: { shape } },
    },
  ];
}

/**
 * The graph of a trace: `inputs` are the binding ids fed at every run (placeholders), `outputs` the ids to fetch.
 * Every other tensor the ops read must come from an op of the trace or from a JavaScript value made during it.
 */
export function graphOfTrace(
  binding: NativeBinding,
  trace: StepTrace,
  inputs: ReadonlyMap<number, GraphInput>,
  outputs: readonly number[],
  random: ReadonlySet<number> = new Set(),
): TracedGraph {
  if (trace.readBack) throw new UntraceableStepError('it reads a tensor back into JavaScript in the middle');
  const nodes: GraphNode[] = [];
  const names = new Map<number, string>();
  const draws: TracedGraph['random'] = [];
  for (const [id, input] of inputs) {
    names.set(id, input.name);
    nodes.push({ name: input.name, op: 'Placeholder', inputs: [], attrs: { dtype: { type: input.dtype } } });
  }
  const nameOf = (id: number): string => {
    const known = names.get(id);
    if (known !== undefined) return known;
    const made = trace.created.get(id);
    if (!made) throw new UntraceableStepError(`it reads a tensor made before the step (binding id ${id})`);
    const name = random.has(id) ? `uniform_${id}` : `const_${id}`;
    if (random.has(id)) {
      nodes.push(...uniformDrawNodes(name, made.shape));
      draws.push({ name, recorded: made });
    } else {
      nodes.push({ name, op: 'Const', inputs: [], attrs: { dtype: { type: made.dtype }, value: { tensor: made } } });
    }
    names.set(id, name);
    return name;
  };
  for (const [k, t] of trace.ops.entries()) {
    const name = `op_${k}_${t.op}`;
    const attrs = Object.fromEntries(t.attrs.map((a) => [a.name, attrOf(binding, a)]));
    nodes.push({ name, op: t.op, inputs: t.inputs.map(nameOf), attrs });
    for (const [j, out] of t.outputs.entries()) names.set(out.id, j === 0 ? name : `${name}:${j}`);
  }
  return { nodes, outputs: outputs.map(nameOf), random: draws };
}
