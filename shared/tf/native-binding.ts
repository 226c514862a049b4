/**
 * The slice of tfjs-node's N-API binding that ringtrain calls itself, and how to reach it: the backend object of
 * tfjs-node holds the binding and the map from tfjs data ids to the binding's tensor ids.
 */
import * as tf from '@tensorflow/tfjs';

export interface TensorMetadata {
  id: number;
  shape: number[];
  dtype: number;
}

/** An eager op attribute as tfjs-node passes it: `type` is a TF_AttrType; an array value is a list. */
export interface OpAttr {
  name: string;
  type: number;
  value: boolean | number | string | number[] | boolean[];
}

export interface NativeBinding {
  createTensor(shape: number[], dtype: number, values: ArrayBufferView): number;
  deleteTensor(id: number): void;
  tensorDataSync(id: number): Float32Array | Int32Array | Uint8Array;
  executeOp(opName: string, attrs: OpAttr[], inputIds: number[], numOutputs: number): TensorMetadata[];
  loadSavedModel(dir: string, tags: string): number;
  deleteSavedModel(modelId: number): void;
  runSavedModel(modelId: number, inputIds: number[], inputNames: string, outputNames: string): TensorMetadata[];
  TF_FLOAT: number;
  TF_INT32: number;
  TF_INT64: number;
  TF_BOOL: number;
  TF_ATTR_STRING: number;
  TF_ATTR_INT: number;
  TF_ATTR_FLOAT: number;
  TF_ATTR_BOOL: number;
  TF_ATTR_TYPE: number;
  TF_ATTR_SHAPE: number;
}

/** tfjs-node's backend object, as far as ringtrain uses it. */
export interface NativeBackend {
  binding: NativeBinding;
  /** Runs one eager op and wraps its output as a tfjs tensor. */
  executeSingleOutput(name: string, attrs: unknown[], inputs: tf.TensorInfo[]): tf.Tensor;
  tensorMap: { get(dataId: object): { id: number; values: unknown } };
  getInputTensorIds(tensors: tf.TensorInfo[]): number[];
}

/** tfjs-node's backend when it is the active one, else undefined. */
export function activeNativeBackend(): NativeBackend | undefined {
  if (tf.getBackend() !== 'tensorflow') return undefined;
  const backend = tf.backend() as unknown as Partial<NativeBackend>;
  return backend.binding && backend.tensorMap ? (backend as NativeBackend) : undefined;
}

/** The binding's id of a tensor, creating its native handle first if tfjs still holds the values in JavaScript. */
export function nativeIdOf(backend: NativeBackend, t: tf.TensorInfo): number {
  return backend.getInputTensorIds([t])[0]!;
}
