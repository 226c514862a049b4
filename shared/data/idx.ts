/**
 * Reader and writer for the IDX format (the container of the MNIST and Fashion-MNIST files).
 *
 * Layout, all integers big-endian:
 *   bytes 0-1   zero
 *   byte  2     element type code (0x08 = unsigned byte, the only one ringtrain reads)
 *   byte  3     number of dimensions d
 *   4*d bytes   the dimensions, one uint32 each
 *   the elements, row-major, product(dims) of them
 *
 * The reader is strict: a file must be exactly header + payload long, so a truncated download or
 * a file with junk appended fails loudly here instead of as strange accuracy numbers later.
 */
import { readFile } from 'node:fs/promises';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { DataCorruptError, DataNotFoundError, LayoutMismatchError } from '../errors.js';

const gunzipAsync = promisify(gunzip);

/** A decoded IDX file of unsigned bytes: its dimensions and its elements, row-major. */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** The type code of unsigned-byte elements, the only element type this reader accepts. */
export const IDX_UBYTE = 0x08;

/** Names of the other type codes the format defines, so an error can say what it found. */
const IDX_TYPE_NAMES: Readonly<Record<number, string>> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'int16',
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};

const GZIP_MAGIC_0 = 0x1f;
const GZIP_MAGIC_1 = 0x8b;
const MAX_DIM = 0xffffffff;

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, '0')}`;
}

/** Check the 4-byte magic number and return the dimension count it announces. */
function readMagic(bytes: Uint8Array, file: string): number {
  if (bytes.length < 4) {
    throw new DataCorruptError(file, `truncated: expected at least 4 header bytes, got ${bytes.length}`);
  }
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new DataCorruptError(
      file,
      `bad magic number: expected two zero bytes, got ${hex(bytes[0])} ${hex(bytes[1])} (not an IDX file)`,
    );
  }
  const typeCode = bytes[2];
  if (typeCode !== IDX_UBYTE) {
    const name = IDX_TYPE_NAMES[typeCode] ?? 'unknown';
    throw new DataCorruptError(
      file,
      `unsupported IDX type code ${hex(typeCode)} (${name}); only ${hex(IDX_UBYTE)} (unsigned byte) is supported`,
    );
  }
  const ndims = bytes[3];
  if (ndims === 0) throw new DataCorruptError(file, 'bad magic number: zero dimensions');
  return ndims;
}

/**
 * Decode IDX bytes. The returned `data` is a view into `bytes` (no copy), so keep `bytes` unchanged.
 * Throws DataCorruptError (naming `file`) for a wrong magic number, an unsupported type code,
 * or a length that is not exactly header + product(dims).
 */
export function parseIdx(bytes: Uint8Array, file: string): IdxArray {
  const ndims = readMagic(bytes, file);
  const headerLength = 4 + 4 * ndims;
  if (bytes.length < headerLength) {
    throw new DataCorruptError(
      file,
      `truncated: expected ${headerLength} header bytes for ${ndims} dimensions, got ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerLength);
  const dims: number[] = [];
  let elements = 1;
  for (let i = 0; i < ndims; i++) {
    const dim = view.getUint32(4 + 4 * i, false);
    dims.push(dim);
    // A zero dimension empties the array even after the product overflowed to Infinity (Infinity * 0 is NaN,
    // which would slip past both length checks below).
    elements = dim === 0 ? 0 : elements * dim;
  }
  const expected = headerLength + elements;
  if (bytes.length < expected) {
    throw new DataCorruptError(file, `truncated: expected ${expected} bytes, got ${bytes.length}`);
  }
  if (bytes.length > expected) {
    throw new DataCorruptError(
      file,
      `trailing bytes: expected ${expected} bytes, got ${bytes.length} (${bytes.length - expected} extra)`,
    );
  }
  // A plain Uint8Array view (not a Buffer) so callers get standard slice() copy semantics.
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset + headerLength, elements);
  return { dims, data };
}

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === GZIP_MAGIC_0 && bytes[1] === GZIP_MAGIC_1;
}

function isMissingFileError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Read an IDX file, raw or gzip-compressed (recognised by the gzip magic bytes, whatever the name).
 * Throws DataNotFoundError for a missing file, DataCorruptError for a corrupt gzip stream
 * (with the zlib error as cause) or invalid IDX content.
 */
export async function readIdxFile(path: string): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if (isMissingFileError(err)) throw new DataNotFoundError(path, { cause: err });
    throw err;
  }
  if (isGzip(bytes)) {
    try {
      bytes = await gunzipAsync(bytes);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new DataCorruptError(path, `corrupt gzip stream: ${reason}`, { cause: err });
    }
  }
  return parseIdx(bytes, path);
}

/**
 * Encode unsigned bytes as an IDX file (type 0x08). Used by tests and fixtures.
 * Throws RangeError for unusable dimensions and LayoutMismatchError when `data` does not hold
 * exactly product(dims) elements.
 */
export function writeIdx(dims: number[], data: Uint8Array): Uint8Array {
  if (dims.length < 1 || dims.length > 255) {
    throw new RangeError(`IDX needs 1 to 255 dimensions, got ${dims.length}`);
  }
  let elements = 1;
  for (const dim of dims) {
    if (!Number.isInteger(dim) || dim < 0 || dim > MAX_DIM) {
      throw new RangeError(`IDX dimension must be an integer in [0, ${MAX_DIM}], got ${dim}`);
    }
    elements *= dim;
  }
  if (data.length !== elements)
    throw new LayoutMismatchError(`IDX data for dims [${dims.join(', ')}]`, elements, data.length);
  const headerLength = 4 + 4 * dims.length;
  const out = new Uint8Array(headerLength + elements);
  const view = new DataView(out.buffer);
  out[2] = IDX_UBYTE;
  out[3] = dims.length;
  dims.forEach((dim, i) => view.setUint32(4 + 4 * i, dim, false));
  out.set(data, headerLength);
  return out;
}
