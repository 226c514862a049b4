/** Typed arrays <-> little-endian bytes, the byte order of every number on the wire. */
import { ProtocolError } from '../errors.js';
import { describe } from './describe.js';

export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Reverse the byte order of every `size`-byte word, in place (only needed on big-endian hosts). */
export function swapBytes(bytes: Uint8Array, size: 2 | 4): void {
  for (let i = 0; i + size - 1 < bytes.length; i += size) bytes.subarray(i, i + size).reverse();
}

function wordsToBytes(words: Float32Array | Uint32Array): Uint8Array {
  const view = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  if (HOST_IS_LITTLE_ENDIAN) return view;
  const copy = view.slice();
  swapBytes(copy, 4);
  return copy;
}

/** The memory of `size`-byte little-endian words as an aligned native region: `bytes` itself when possible, else a copy. */
function alignedWords(
  bytes: Uint8Array,
  what: string,
  size: 2 | 4 = 4,
): { buffer: ArrayBufferLike; byteOffset: number; length: number } {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError(`${what} must be bytes, got ${describe(bytes)}`);
  if (bytes.byteLength % size !== 0)
    throw new ProtocolError(`${what}: ${bytes.byteLength} bytes is not a multiple of ${size}`);
  const length = bytes.byteLength / size;
  if (HOST_IS_LITTLE_ENDIAN && bytes.byteOffset % size === 0)
    return { buffer: bytes.buffer, byteOffset: bytes.byteOffset, length };
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  if (!HOST_IS_LITTLE_ENDIAN) swapBytes(copy, size);
  return { buffer: copy.buffer, byteOffset: 0, length };
}

/** Little-endian uint16 bytes (float16 bits) as values: a view when 2-byte aligned, else a copy. */
export function bytesToUint16(bytes: Uint8Array): Uint16Array {
  const region = alignedWords(bytes, 'float16 bytes', 2);
  return new Uint16Array(region.buffer, region.byteOffset, region.length);
}

/** float32 values as little-endian bytes: a zero-copy view on little-endian hosts. */
export function float32ToBytes(values: Float32Array): Uint8Array {
  return wordsToBytes(values);
}

/** Little-endian float32 bytes as values: a view when 4-byte aligned, else a copy. */
export function bytesToFloat32(bytes: Uint8Array): Float32Array {
  const region = alignedWords(bytes, 'float32 bytes');
  return new Float32Array(region.buffer, region.byteOffset, region.length);
}

/** uint32 values as little-endian bytes: a zero-copy view on little-endian hosts. */
export function uint32ToBytes(values: Uint32Array): Uint8Array {
  return wordsToBytes(values);
}

/** Little-endian uint32 bytes as values: a view when 4-byte aligned, else a copy. */
export function bytesToUint32(bytes: Uint8Array): Uint32Array {
  const region = alignedWords(bytes, 'uint32 bytes');
  return new Uint32Array(region.buffer, region.byteOffset, region.length);
}
