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
 * see, and is refused; so is one whose recorded constants differ between two steps (random numbers drawn in
 * JavaScript, such as tfjs's dropout masks): `sameProgram` compares two recordings.
 */
import type { Attr, ConstTensor, GraphNode } from './graph-def.js';
import type { NativeBinding, OpAttr, TensorMetadata } from './native-binding.js';

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

export class UntraceableStepError extends Error {
  constructor(readonly reason: string) {
    super(`the training step cannot run as one graph: ${reason}`);
  }
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

/** The program a trace recorded, with binding ids replaced by their order of first appearance. */
function programKey(trace: StepTrace, fed: ReadonlySet<number>): string {
  const order = new Map<number, number>();
  const local = (id: number): number => {
    if (!order.has(id)) order.set(id, order.size);
    return order.get(id)!;
  };
  const parts = trace.ops.map((t) => {
    const inputs = t.inputs.map((id) => {
      const made = fed.has(id) ? undefined : trace.created.get(id);
      return made ? `c${Buffer.from(made.content).toString('base64')}/${made.shape.join('x')}` : `t${local(id)}`;
    });
    return `${t.op}${JSON.stringify(t.attrs)}(${inputs.join(',')})->${t.outputs.map((o) => local(o.id)).join(',')}`;
  });
  return parts.join(';');
}

/** Whether two recordings are the same program; `fedA`/`fedB` are each step's own inputs (images, labels). */
export function sameProgram(a: StepTrace, fedA: ReadonlySet<number>, b: StepTrace, fedB: ReadonlySet<number>): boolean {
  return programKey(a, fedA) === programKey(b, fedB);
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

export interface GraphInput {
  name: string;
  dtype: number;
  shape: readonly number[];
}

export interface TracedGraph {
  nodes: GraphNode[];
  /** "node" or "node:k" of each requested output, in order. */
  outputs: string[];
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
): TracedGraph {
  if (trace.readBack) throw new UntraceableStepError('it reads a tensor back into JavaScript in the middle');
  const nodes: GraphNode[] = [];
  const names = new Map<number, string>();
  for (const [id, input] of inputs) {
    names.set(id, input.name);
    nodes.push({ name: input.name, op: 'Placeholder', inputs: [], attrs: { dtype: { type: input.dtype } } });
  }
  const nameOf = (id: number): string => {
    const known = names.get(id);
    if (known !== undefined) return known;
    const made = trace.created.get(id);
    if (!made) throw new UntraceableStepError(`it reads a tensor made before the step (binding id ${id})`);
    const name = `const_${id}`;
    nodes.push({ name, op: 'Const', inputs: [], attrs: { dtype: { type: made.dtype }, value: { tensor: made } } });
    names.set(id, name);
    return name;
  };
  for (const [k, t] of trace.ops.entries()) {
    const name = `op_${k}_${t.op}`;
    const attrs = Object.fromEntries(t.attrs.map((a) => [a.name, attrOf(binding, a)]));
    nodes.push({ name, op: t.op, inputs: t.inputs.map(nameOf), attrs });
    for (const [j, out] of t.outputs.entries()) names.set(out.id, j === 0 ? name : `${name}:${j}`);
  }
  return { nodes, outputs: outputs.map(nameOf) };
}
