/** Gradient chunk frames: the 20-byte header (see protocol.ts) and the values behind it. */
import { ProtocolError } from '../errors.js';
import { bytesToFloat32, bytesToUint16, HOST_IS_LITTLE_ENDIAN, swapBytes } from './bytes.js';
import { describe } from './describe.js';
import { FieldReader } from './fields.js';
import { FrameKind, PROTOCOL_VERSION, readPrefix, unknownKind } from './framing.js';

export const CHUNK_HEADER_BYTES = 20;
const UINT32_MAX = 0xffffffff;

export const Phase = { reduceScatter: 0, allgather: 1 } as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

/** How values travel on the wire. */
export const ValueEncoding = { float32: 0, float16: 1 } as const;
export type ValueEncoding = (typeof ValueEncoding)[keyof typeof ValueEncoding];

export interface ChunkHeader {
  /** Membership generation; frames of another generation belong to a ring that no longer exists. */
  generation: number;
  /** Training step the allreduce belongs to. */
  step: number;
  phase: Phase;
  /** Block index: ring chunk c in [0, worldSize), or segment k of it as c + k * worldSize. */
  chunk: number;
  /** Number of values in the block. */
  count: number;
  /** Wire encoding of the values; absent means float32. */
  encoding?: ValueEncoding;
}

/** What identifies a frame on a link: every header field but the count. */
export type ChunkKey = Omit<ChunkHeader, 'count'>;

/** Bytes per value of an encoding. */
export function bytesPerValue(encoding: ValueEncoding): 2 | 4 {
  return encoding === ValueEncoding.float16 ? 2 : 4;
}

/** The size of the whole frame (header and values) for this header. */
export function chunkFrameBytes(header: ChunkHeader): number {
  return CHUNK_HEADER_BYTES + bytesPerValue(header.encoding ?? ValueEncoding.float32) * header.count;
}

/**
 * Validate `header` and write it into the first CHUNK_HEADER_BYTES of `frame`, whose length must be
 * chunkFrameBytes(header). The caller writes the values after it (little-endian): this is how the ring transport
 * fills reused frame buffers without a copy of its own.
 */
export function writeChunkHeader(frame: Uint8Array, header: ChunkHeader): void {
  const checked = checkChunkHeader(header);
  const expected = chunkFrameBytes(checked);
  if (frame.byteLength !== expected)
    throw new ProtocolError(`a frame of ${checked.count} values needs ${expected} bytes, got ${frame.byteLength}`);
  const view = new DataView(frame.buffer, frame.byteOffset, CHUNK_HEADER_BYTES);
  frame[0] = FrameKind.chunk;
  frame[1] = PROTOCOL_VERSION;
  frame[2] = checked.phase;
  frame[3] = checked.encoding ?? ValueEncoding.float32;
  view.setUint32(4, checked.generation, true);
  view.setUint32(8, checked.step, true);
  view.setUint32(12, checked.chunk, true);
  view.setUint32(16, checked.count, true);
}

/**
 * Encode a gradient chunk: one allocation of the frame, one copy of the values. `data` holds the values as they
 * travel: a Float32Array, or with header.encoding float16 a Uint16Array of float16 bits.
 */
export function encodeChunkFrame(header: ChunkHeader, data: Float32Array | Uint16Array): Buffer {
  const encoding = header.encoding ?? ValueEncoding.float32;
  const expectedType = encoding === ValueEncoding.float16 ? Uint16Array : Float32Array;
  if (!(data instanceof expectedType)) {
    throw new ProtocolError(
      `chunk data must be a ${expectedType.name} for encoding ${String(encoding)}, got ${describe(data)}`,
    );
  }
  if (header.count !== data.length) {
    throw new ProtocolError(`chunk header count ${String(header.count)} does not match ${data.length} values`);
  }
  const frame = Buffer.allocUnsafe(CHUNK_HEADER_BYTES + data.byteLength);
  writeChunkHeader(frame, header);
  frame.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), CHUNK_HEADER_BYTES);
  if (!HOST_IS_LITTLE_ENDIAN) swapBytes(frame.subarray(CHUNK_HEADER_BYTES), bytesPerValue(encoding));
  return frame;
}

function checkChunkHeader(header: ChunkHeader): ChunkHeader {
  const fields = FieldReader.of(header, 'chunk header');
  const phase = fields.int('phase', 0, 1) as Phase;
  const checked: ChunkHeader = {
    generation: fields.int('generation', 0, UINT32_MAX),
    step: fields.int('step', 0, UINT32_MAX),
    phase,
    chunk: fields.int('chunk', 0, UINT32_MAX),
    count: fields.int('count', 0, UINT32_MAX),
  };
  if (header.encoding !== undefined) checked.encoding = fields.int('encoding', 0, 1) as ValueEncoding;
  return checked;
}

/**
 * Decode a float32 gradient chunk frame. The data is a zero-copy view into `buf` when the payload is 4-byte aligned in
 * its ArrayBuffer (little-endian hosts), otherwise a copy. A float16 frame is refused here (every frame this accepts
 * holds 4 bytes per value); decodeChunkValues, the ring transport's receive path, decodes both encodings.
 */
export function decodeChunkFrame(buf: Uint8Array): { header: ChunkHeader; data: Float32Array } {
  const { header, values } = decodeChunkValues(buf);
  return { header, data: float32Only(values) };
}

/**
 * Decode a gradient chunk frame, its values as they travelled: a Float32Array or (float16) a Uint16Array of the
 * half-precision bits, each a zero-copy view into `buf` when aligned (little-endian hosts), otherwise a copy. The ring
 * transport's receive path.
 */
export function decodeChunkValues(buf: Uint8Array): { header: ChunkHeader; values: Float32Array | Uint16Array } {
  const kind = readPrefix(buf);
  if (kind === FrameKind.control) throw new ProtocolError('expected a gradient chunk frame, got a control message');
  if (kind !== FrameKind.chunk) throw unknownKind(kind);
  return decodeChunkBody(buf);
}

export function float32Only(values: Float32Array | Uint16Array): Float32Array {
  if (values instanceof Float32Array) return values;
  throw new ProtocolError('a float16 chunk frame: only decodeChunkValues (the ring transport) decodes those');
}

export function decodeChunkBody(buf: Uint8Array): { header: ChunkHeader; values: Float32Array | Uint16Array } {
  if (buf.byteLength < CHUNK_HEADER_BYTES) {
    throw new ProtocolError(
      `chunk frame of ${buf.byteLength} bytes is shorter than its ${CHUNK_HEADER_BYTES}-byte header`,
    );
  }
  const phase = buf[2];
  if (phase !== Phase.reduceScatter && phase !== Phase.allgather)
    throw new ProtocolError(`chunk frame phase ${phase} is not 0 or 1`);
  const encoding = buf[3];
  if (encoding !== ValueEncoding.float32 && encoding !== ValueEncoding.float16) {
    throw new ProtocolError(`chunk frame encoding byte is ${encoding}, not 0 (float32) or 1 (float16)`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, CHUNK_HEADER_BYTES);
  const header: ChunkHeader = {
    generation: view.getUint32(4, true),
    step: view.getUint32(8, true),
    phase,
    chunk: view.getUint32(12, true),
    count: view.getUint32(16, true),
  };
  if (encoding === ValueEncoding.float16) header.encoding = ValueEncoding.float16;
  const expected = chunkFrameBytes(header);
  if (buf.byteLength !== expected) {
    throw new ProtocolError(`chunk frame of ${header.count} values must be ${expected} bytes, got ${buf.byteLength}`);
  }
  const payload = buf.subarray(CHUNK_HEADER_BYTES);
  return { header, values: encoding === ValueEncoding.float16 ? bytesToUint16(payload) : bytesToFloat32(payload) };
}
