import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseIdx, readIdxFile, writeIdx, IDX_UBYTE } from '../shared/data/idx.js';
import { DataCorruptError, DataNotFoundError, LayoutMismatchError } from '../shared/errors.js';
import { defaultMnistDir } from '../shared/data/mnist.js';

/** A small 3-D sample whose bytes are all distinct so layout mistakes show. */
function sample(): { dims: number[]; data: Uint8Array } {
  const dims = [2, 3, 4];
  const data = Uint8Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 256);
  return { dims, data };
}

/** Assert `fn` throws a DataCorruptError whose message names `file` and matches `detail`. */
function assertCorrupt(fn: () => unknown, file: string, detail: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DataCorruptError, `expected DataCorruptError, got ${String(err)}`);
    assert.equal(err.code, 'DATA_CORRUPT');
    assert.equal(err.file, file);
    assert.ok(err.message.startsWith(`${file}: `), err.message);
    assert.match(err.message, detail);
    return true;
  });
}

describe('writeIdx / parseIdx', () => {
  test('round-trips dims and data with the documented header', () => {
    const { dims, data } = sample();
    const bytes = writeIdx(dims, data);
    assert.equal(bytes.length, 4 + 4 * 3 + 24);
    assert.deepEqual([...bytes.subarray(0, 16)], [0, 0, IDX_UBYTE, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
    const parsed = parseIdx(bytes, 'x.idx');
    assert.deepEqual(parsed.dims, dims);
    assert.deepEqual([...parsed.data], [...data]);
  });

  test('reads dimensions big-endian', () => {
    const header = Uint8Array.of(0, 0, 8, 1, 0x01, 0x02, 0x03, 0x04);
    const expected = 8 + 0x01020304;
    assertCorrupt(() => parseIdx(header, 'big'), 'big', new RegExp(`truncated: expected ${expected} bytes, got 8$`));
    assert.deepEqual(parseIdx(writeIdx([0, 5], new Uint8Array(0)), 'empty').dims, [0, 5]);
  });

  test('returns a plain Uint8Array view, not a copy', () => {
    const oneD = writeIdx([3], Uint8Array.of(9, 8, 7));
    const parsed = parseIdx(oneD, 'labels');
    assert.equal(parsed.data.buffer, oneD.buffer);
    assert.equal(parsed.data.byteOffset, 8);
    assert.ok(!Buffer.isBuffer(parsed.data));
  });

  test('parses a Buffer that sits at an offset inside a larger ArrayBuffer', () => {
    const bytes = writeIdx([2, 2], Uint8Array.of(1, 2, 3, 4));
    const backing = new Uint8Array(bytes.length + 10);
    backing.set(bytes, 7);
    const parsed = parseIdx(backing.subarray(7, 7 + bytes.length), 'offset');
    assert.deepEqual(parsed.dims, [2, 2]);
    assert.deepEqual([...parsed.data], [1, 2, 3, 4]);
  });

  test('writeIdx rejects data of the wrong length and bad dimensions', () => {
    assert.throws(() => writeIdx([2, 3], new Uint8Array(5)), LayoutMismatchError);
    assert.throws(() => writeIdx([], new Uint8Array(1)), RangeError);
    assert.throws(() => writeIdx([1.5], new Uint8Array(1)), RangeError);
    assert.throws(() => writeIdx([-1], new Uint8Array(0)), RangeError);
  });
});

describe('parseIdx errors', () => {
  const { dims, data } = sample();
  const good = writeIdx(dims, data);

  test('truncated payload', () => {
    assertCorrupt(
      () => parseIdx(good.subarray(0, good.length - 1), 'imgs'),
      'imgs',
      new RegExp(`truncated: expected ${good.length} bytes, got ${good.length - 1}$`),
    );
  });

  test('truncated header', () => {
    assertCorrupt(
      () => parseIdx(good.subarray(0, 10), 'imgs'),
      'imgs',
      /truncated: expected 16 header bytes .* got 10/,
    );
    assertCorrupt(
      () => parseIdx(good.subarray(0, 3), 'imgs'),
      'imgs',
      /truncated: expected at least 4 header bytes, got 3/,
    );
    assertCorrupt(() => parseIdx(new Uint8Array(0), 'imgs'), 'imgs', /truncated/);
  });

  test('trailing bytes', () => {
    const longer = new Uint8Array(good.length + 3);
    longer.set(good);
    assertCorrupt(
      () => parseIdx(longer, 'imgs'),
      'imgs',
      new RegExp(`trailing bytes: expected ${good.length} bytes, got ${good.length + 3} \\(3 extra\\)`),
    );
  });

  test('wrong magic number', () => {
    const bad = good.slice();
    bad[1] = 0x01;
    assertCorrupt(() => parseIdx(bad, 'imgs'), 'imgs', /bad magic number.*0x00 0x01/);
    const png = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0);
    assertCorrupt(() => parseIdx(png, 'picture.png'), 'picture.png', /bad magic number/);
  });

  test('zero dimensions', () => {
    assertCorrupt(() => parseIdx(Uint8Array.of(0, 0, 8, 0), 'scalar'), 'scalar', /zero dimensions/);
  });

  test('unsupported and unknown type codes', () => {
    const float32 = good.slice();
    float32[2] = 0x0d;
    assertCorrupt(() => parseIdx(float32, 'floats'), 'floats', /type code 0x0d \(float32\)/);
    const unknown = good.slice();
    unknown[2] = 0x42;
    assertCorrupt(() => parseIdx(unknown, 'odd'), 'odd', /type code 0x42 \(unknown\)/);
  });
});

describe('readIdxFile', () => {
  let dir = '';
  const { dims, data } = sample();
  const raw = writeIdx(dims, data);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ringtrain-idx-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('reads a raw file', async () => {
    const file = join(dir, 'raw-idx3-ubyte');
    await writeFile(file, raw);
    const parsed = await readIdxFile(file);
    assert.deepEqual(parsed.dims, dims);
    assert.deepEqual([...parsed.data], [...data]);
  });

  test('detects gzip by its magic bytes, not by the file name', async () => {
    const gzNoSuffix = join(dir, 'compressed-without-suffix');
    await writeFile(gzNoSuffix, gzipSync(raw));
    assert.deepEqual([...(await readIdxFile(gzNoSuffix)).data], [...data]);
    const rawWithGzSuffix = join(dir, 'really-raw.gz');
    await writeFile(rawWithGzSuffix, raw);
    assert.deepEqual((await readIdxFile(rawWithGzSuffix)).dims, dims);
  });

  test('a corrupt gzip stream is DataCorruptError with the zlib error as cause', async () => {
    const gz = gzipSync(raw);
    const truncated = join(dir, 'truncated.gz');
    await writeFile(truncated, gz.subarray(0, gz.length - 12));
    const garbled = join(dir, 'garbled.gz');
    const mangled = Buffer.from(gz);
    mangled.fill(0xff, 10, 20);
    await writeFile(garbled, mangled);
    for (const file of [truncated, garbled]) {
      await assert.rejects(readIdxFile(file), (err: unknown) => {
        assert.ok(err instanceof DataCorruptError, String(err));
        assert.ok(err.message.startsWith(`${file}: corrupt gzip stream`), err.message);
        assert.ok(err.cause instanceof Error);
        return true;
      });
    }
  });

  test('gzip of a truncated IDX file reports the IDX problem', async () => {
    const file = join(dir, 'short-inside.gz');
    await writeFile(file, gzipSync(raw.subarray(0, raw.length - 5)));
    await assert.rejects(readIdxFile(file), (err: unknown) => {
      assert.ok(err instanceof DataCorruptError);
      assert.match(
        err.message,
        new RegExp(`^${file}: truncated: expected ${raw.length} bytes, got ${raw.length - 5}$`),
      );
      return true;
    });
  });

  test('a missing file is DataNotFoundError naming it', async () => {
    const file = join(dir, 'nope-idx1-ubyte');
    await assert.rejects(readIdxFile(file), (err: unknown) => {
      assert.ok(err instanceof DataNotFoundError);
      assert.equal(err.code, 'DATA_NOT_FOUND');
      assert.equal(err.message, `${file}: not found`);
      return true;
    });
  });

  test('reads the embedded MNIST label file header', async () => {
    const labels = await readIdxFile(join(defaultMnistDir(), 'train-labels-idx1-ubyte'));
    assert.deepEqual(labels.dims, [60000]);
    assert.deepEqual([...labels.data.subarray(0, 8)], [5, 0, 4, 1, 9, 2, 1, 3]);
  });
});
