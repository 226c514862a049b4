/**
 * A TensorFlow graph as plain data, and its SavedModel encoding (tensorflow/core/protobuf/saved_model.proto and the
 * framework protos it nests: GraphDef, NodeDef, AttrValue, TensorProto, TensorShapeProto). A SavedModel with no
 * variables folder is a graph alone: libtensorflow loads it into a session, and nothing is restored.
 */
import { ProtoWriter } from './proto-writer.js';

export interface ConstTensor {
  /** TensorFlow's DataType number (the same as the C API's TF_DataType). */
  dtype: number;
  shape: readonly number[];
  /** Row-major little-endian bytes. */
  content: Uint8Array;
}

/** One attribute; an array value is a list attribute. */
export type Attr =
  | { s: string }
  | { i: number | readonly number[] }
  | { f: number | readonly number[] }
  | { b: boolean | readonly boolean[] }
  | { type: number | readonly number[] }
  | { shape: readonly number[] }
  | { tensor: ConstTensor };

export interface GraphNode {
  name: string;
  op: string;
  /** "node" or "node:k" for output k. */
  inputs: readonly string[];
  attrs: Readonly<Record<string, Attr>>;
}

function writeShape(w: ProtoWriter, dims: readonly number[]): void {
  for (const d of dims) w.message(2, (dim) => dim.varint(1, d));
}

function writeTensor(w: ProtoWriter, t: ConstTensor): void {
  w.varint(1, t.dtype);
  w.message(2, (s) => writeShape(s, t.shape));
  w.bytes(4, t.content);
}

function writeList(w: ProtoWriter, attr: Attr): void {
  if ('s' in attr) for (const s of [attr.s].flat()) w.string(2, s);
  else if ('i' in attr) w.packedVarints(3, [attr.i].flat());
  else if ('f' in attr) w.packedFloats(4, [attr.f].flat());
  else if ('b' in attr) w.packedVarints(5, [attr.b].flat());
  else if ('type' in attr) w.packedVarints(6, [attr.type].flat());
}

function writeAttr(w: ProtoWriter, attr: Attr): void {
  const value = Object.values(attr)[0] as unknown;
  if (Array.isArray(value) && !('shape' in attr)) return void w.message(1, (l) => writeList(l, attr));
  if ('s' in attr) w.string(2, attr.s);
  else if ('i' in attr) w.varint(3, attr.i as number);
  else if ('f' in attr) w.float(4, attr.f as number);
  else if ('b' in attr) w.varint(5, attr.b as boolean);
  else if ('type' in attr) w.varint(6, attr.type as number);
  else if ('shape' in attr) w.message(7, (s) => writeShape(s, attr.shape));
  else w.message(8, (t) => writeTensor(t, attr.tensor));
}

function writeNode(w: ProtoWriter, node: GraphNode): void {
  w.string(1, node.name).string(2, node.op);
  for (const input of node.inputs) w.string(3, input);
  for (const [key, attr] of Object.entries(node.attrs)) {
    w.message(5, (entry) => entry.string(1, key).message(2, (a) => writeAttr(a, attr)));
  }
}

/** The graph's producer version: old enough for any libtensorflow 2.x to accept, new enough for today's ops. */
const GRAPH_PRODUCER = 1000;

/** saved_model.pb bytes: one meta graph, with these tags, holding the nodes. */
export function encodeSavedModel(nodes: readonly GraphNode[], tags: readonly string[]): Uint8Array {
  return new ProtoWriter()
    .varint(1, 1)
    .message(2, (meta) => {
      meta.message(1, (info) => {
        for (const tag of tags) info.string(4, tag);
      });
      meta.message(2, (graph) => {
        for (const node of nodes) graph.message(1, (n) => writeNode(n, node));
        graph.message(4, (versions) => versions.varint(1, GRAPH_PRODUCER));
      });
    })
    .finish();
}
