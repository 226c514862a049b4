import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { watch } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import {
  CHECKPOINT_MAGIC,
  CheckpointStore,
  checkpointFileName,
  type Checkpoint,
  type CheckpointMeta,
} from '../coordinator/checkpoints.js';
import { CheckpointCorruptError, CheckpointRunMismatchError, DataNotFoundError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';

type SaveMeta = Omit<CheckpointMeta, 'createdAt'>;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-ckpt-'));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function metaAt(step: number, extra?: Record<string, unknown>): SaveMeta {
  return {
    runId: 'run-7',
    step,
    epoch: Math.floor(step / 10),
    consumed: (step % 10) * 64,
    generation: 2,
    config: { model: 'cnn', lr: 0.01, batchSize: 64, workers: [1, 2, 3], nested: { warmup: true } },
    ...(extra ? { extra } : {}),
  };
}

/** Deterministic arrays whose values differ per seed. */
function arrays(seed: number, weights = 1000, optimizer = 2000): { w: Float32Array; o: Float32Array } {
  const w = new Float32Array(weights);
  const o = new Float32Array(optimizer);
  for (let i = 0; i < w.length; i++) w[i] = Math.sin(seed * 1000 + i) * 3;
  for (let i = 0; i < o.length; i++) o[i] = Math.cos(seed * 1000 + i) / 7;
  return { w, o };
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}

/** A logger whose records are kept in memory for assertions. */
function capturingLogger(): { log: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const log: Logger = pino(
    { level: 'trace' },
    {
      write: (line: string) => {
        records.push(JSON.parse(line));
      },
    },
  );
  return { log, records };
}

/** Write a file in the checkpoint format with an arbitrary header object (correct payload hash unless overridden). */
async function writeRawCheckpoint(file: string, header: Record<string, unknown>, payload: Buffer): Promise<void> {
  const full = { sha256: createHash('sha256').update(payload).digest('hex'), ...header };
  const json = Buffer.from(JSON.stringify(full), 'utf8');
  const preamble = Buffer.alloc(12);
  preamble.write(CHECKPOINT_MAGIC, 0, 'ascii');
  preamble.writeUInt32LE(json.length, 8);
  await fs.writeFile(file, Buffer.concat([preamble, json, payload]));
}

function metaSha(meta: unknown): string {
  return createHash('sha256').update(JSON.stringify(meta), 'utf8').digest('hex');
}

function assertCheckpoint(cp: Checkpoint | undefined, step: number, seed: number): void {
  assert.ok(cp, `expected checkpoint at step ${step}`);
  assert.equal(cp.meta.step, step);
  const { w, o } = arrays(seed);
  assert.ok(sameBits(cp.weights, w), 'weights differ');
  assert.ok(sameBits(cp.optimizer, o), 'optimizer differs');
}

test('round trip: arrays are bitwise equal, meta is equal, file layout is as documented', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const w = new Float32Array([0, -0, 1.5, -3.25, Infinity, -Infinity, 1e-45, 3.4028234663852886e38, 0.1]);
    const nanBits = new Uint32Array([0x7fc00001, 0xffc12345]); // NaNs with payloads must survive too
    const withNaN = new Float32Array(w.length + 2);
    withNaN.set(w);
    withNaN.set(new Float32Array(nanBits.buffer), w.length);
    const optimizer = new Float32Array([7, 8, 9, -1e-40]);
    const meta = metaAt(42, { history: [{ epoch: 0, accuracy: 0.91 }], note: 'ü€' });
    const before = Date.now();
    const file = await store.save(meta, withNaN, optimizer);
    assert.equal(file, path.join(dir, 'ckpt-0000000042.rtckpt'));

    for (const cp of [(await store.loadLatest()).checkpoint, await CheckpointStore.read(file)]) {
      assert.ok(cp);
      assert.equal(cp.file, file);
      assert.ok(sameBits(cp.weights, withNaN));
      assert.ok(sameBits(cp.optimizer, optimizer));
      assert.equal(cp.weights.buffer.byteLength, withNaN.byteLength, 'weights own their buffer');
      const { createdAt, ...rest } = cp.meta;
      assert.deepEqual(rest, meta);
      assert.equal(new Date(createdAt).toISOString(), createdAt);
      assert.ok(Date.parse(createdAt) >= before - 1000 && Date.parse(createdAt) <= Date.now() + 1000);
    }

    const bytes = await fs.readFile(file);
    assert.equal(bytes.subarray(0, 8).toString('ascii'), 'RTCKPT01');
    const headerLength = bytes.readUInt32LE(8);
    assert.equal((12 + headerLength) % 8, 0, 'payload is 8-byte aligned');
    assert.equal(bytes.length, 12 + headerLength + 4 * (withNaN.length + optimizer.length));
    const header = JSON.parse(bytes.subarray(12, 12 + headerLength).toString('utf8'));
    assert.equal(header.weightsLength, withNaN.length);
    assert.equal(header.optimizerLength, optimizer.length);
    assert.equal(
      header.sha256,
      createHash('sha256')
        .update(bytes.subarray(12 + headerLength))
        .digest('hex'),
    );
    assert.equal(bytes.readFloatLE(12 + headerLength + 8), 1.5);
  });
});

test('empty arrays and an empty or missing directory', async () => {
  await withTempDir(async (dir) => {
    const missing = new CheckpointStore(path.join(dir, 'not-yet'));
    assert.deepEqual(await missing.list(), []);
    assert.deepEqual(await missing.loadLatest(), { skipped: [] });
    const store = new CheckpointStore(dir);
    const empty = await store.loadLatest();
    assert.equal(empty.checkpoint, undefined);
    assert.deepEqual(empty.skipped, []);
    await missing.save(metaAt(0), new Float32Array(0), new Float32Array(0));
    const { checkpoint } = await missing.loadLatest();
    assert.ok(checkpoint);
    assert.equal(checkpoint.weights.length, 0);
    assert.equal(checkpoint.optimizer.length, 0);
  });
});

test('retention keeps the newest N, and never the file just written', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir, { keep: 2 });
    for (const step of [1, 2, 3, 4, 5]) {
      const { w, o } = arrays(step);
      await store.save(metaAt(step), w, o);
    }
    assert.deepEqual(
      (await store.list()).map((f) => path.basename(f)),
      [checkpointFileName(5), checkpointFileName(4)],
    );
    // A resumed run that writes an older step than a newer (say corrupt) file still keeps what it just wrote.
    const { w, o } = arrays(3);
    await store.save(metaAt(3), w, o);
    assert.deepEqual(
      (await store.list()).map((f) => path.basename(f)),
      [checkpointFileName(5), checkpointFileName(3)],
    );
    assert.throws(() => new CheckpointStore(dir, { keep: 0 }), RangeError);
  });
});

test('saving the same step twice replaces the file', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const first = arrays(1);
    const second = arrays(2);
    const a = await store.save(metaAt(10), first.w, first.o);
    const b = await store.save(metaAt(10), second.w, second.o);
    assert.equal(a, b);
    assert.deepEqual(await store.list(), [a]);
    assertCheckpoint((await store.loadLatest()).checkpoint, 10, 2);
    assert.deepEqual((await fs.readdir(dir)).sort(), [checkpointFileName(10)]);
  });
});

/** Save steps 1 and 2, damage step 2's file with `damage`, and check the store falls back to step 1. */
async function expectFallback(damage: (file: string) => Promise<void>, problem: RegExp): Promise<void> {
  await withTempDir(async (dir) => {
    const { log, records } = capturingLogger();
    const store = new CheckpointStore(dir, { log });
    for (const step of [1, 2]) {
      const { w, o } = arrays(step);
      await store.save(metaAt(step), w, o);
    }
    const newest = path.join(dir, checkpointFileName(2));
    await damage(newest);
    const { checkpoint, skipped } = await store.loadLatest();
    assertCheckpoint(checkpoint, 1, 1);
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0].file, newest);
    assert.ok(skipped[0].error instanceof CheckpointCorruptError);
    assert.equal(skipped[0].error.code, 'CHECKPOINT_CORRUPT');
    assert.equal(skipped[0].error.file, newest);
    assert.ok(skipped[0].error.message.includes(newest), skipped[0].error.message);
    assert.match(skipped[0].error.message, problem);
    const errors = records.filter((r) => r.level === 50);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].file, newest);
    assert.match(String(errors[0].problem), problem);
    await assert.rejects(CheckpointStore.read(newest), CheckpointCorruptError);
  });
}

test('a truncated newest file falls back to the previous one and is reported by name', async () => {
  await expectFallback(async (file) => {
    const { size } = await fs.stat(file);
    await fs.truncate(file, size - 5);
  }, /truncated/);
});

test('a truncated header falls back too', async () => {
  await expectFallback((file) => fs.truncate(file, 40), /runs past the end|truncated/);
});

test('a flipped payload byte fails the checksum and falls back', async () => {
  await expectFallback(async (file) => {
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 100] ^= 0x01;
    await fs.writeFile(file, bytes);
  }, /payload sha256 mismatch/);
});

test('a flipped digit in the meta fails the meta checksum and falls back', async () => {
  await expectFallback(async (file) => {
    const bytes = await fs.readFile(file);
    const at = bytes.indexOf('"consumed":128');
    assert.ok(at > 0);
    bytes[at + '"consumed":'.length] = '9'.charCodeAt(0);
    await fs.writeFile(file, bytes);
  }, /meta sha256 mismatch/);
});

test('a garbage file under a checkpoint name falls back', async () => {
  await expectFallback(
    (file) => fs.writeFile(file, Buffer.from('this is not a checkpoint at all, just some text\n')),
    /bad magic/,
  );
});

test('trailing bytes are rejected', async () => {
  await expectFallback((file) => fs.appendFile(file, Buffer.alloc(4)), /trailing bytes/);
});

test('verification names each kind of problem', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'x.rtckpt');
    const cases: Array<[string, () => Promise<void>, RegExp]> = [
      [
        'wrong magic',
        () => fs.writeFile(file, Buffer.concat([Buffer.from('RTCKPT02'), Buffer.alloc(40)])),
        /bad magic "RTCKPT02"/,
      ],
      ['short file', () => fs.writeFile(file, Buffer.from('RTCK')), /shorter than the 12-byte preamble/],
      ['empty file', () => fs.writeFile(file, Buffer.alloc(0)), /0 bytes/],
      [
        'huge header length',
        async () => {
          const b = Buffer.alloc(64);
          b.write('RTCKPT01');
          b.writeUInt32LE(0xffffffff, 8);
          await fs.writeFile(file, b);
        },
        /header length 4294967295 is not sane/,
      ],
      [
        'header not JSON',
        async () => {
          const b = Buffer.alloc(20, 0x41);
          b.write('RTCKPT01');
          b.writeUInt32LE(8, 8);
          await fs.writeFile(file, b);
        },
        /not valid UTF-8 JSON/,
      ],
      [
        'meta field of the wrong type',
        () => {
          const meta = { ...metaAt(1), step: '1', createdAt: new Date().toISOString() };
          return writeRawCheckpoint(
            file,
            { meta, weightsLength: 0, optimizerLength: 0, metaSha256: metaSha(meta) },
            Buffer.alloc(0),
          );
        },
        /meta\.step is not a non-negative integer/,
      ],
      [
        'missing config',
        () => {
          const meta = { ...metaAt(1), config: null, createdAt: new Date().toISOString() };
          return writeRawCheckpoint(
            file,
            { meta, weightsLength: 0, optimizerLength: 0, metaSha256: metaSha(meta) },
            Buffer.alloc(0),
          );
        },
        /meta\.config is not an object/,
      ],
      [
        'negative length',
        () => {
          const meta = { ...metaAt(1), createdAt: new Date().toISOString() };
          return writeRawCheckpoint(
            file,
            { meta, weightsLength: -1, optimizerLength: 0, metaSha256: metaSha(meta) },
            Buffer.alloc(0),
          );
        },
        /weightsLength/,
      ],
      [
        'header is an array',
        () => writeRawCheckpoint(file, [] as unknown as Record<string, unknown>, Buffer.alloc(0)),
        /not a JSON object|meta is not an object/,
      ],
    ];
    for (const [name, write, problem] of cases) {
      await write();
      await assert.rejects(CheckpointStore.read(file), (err: unknown) => {
        assert.ok(err instanceof CheckpointCorruptError, `${name}: ${String(err)}`);
        assert.equal(err.file, file);
        assert.match(err.message, problem, name);
        return true;
      });
    }
    await assert.rejects(CheckpointStore.read(path.join(dir, 'nope.rtckpt')), DataNotFoundError);
  });
});

test('a file whose name disagrees with its step is rejected', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const { w, o } = arrays(1);
    const file = await store.save(metaAt(5), w, o);
    const renamed = path.join(dir, checkpointFileName(6));
    await fs.rename(file, renamed);
    await assert.rejects(CheckpointStore.read(renamed), /file name says step 6 but the header says 5/);
  });
});

test('save rejects meta that could not be read back', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const { w, o } = arrays(1);
    await assert.rejects(store.save({ ...metaAt(1), step: -1 }, w, o), TypeError);
    await assert.rejects(store.save({ ...metaAt(1), consumed: NaN }, w, o), TypeError);
    await assert.rejects(
      store.save({ ...metaAt(1), config: [] as unknown as Record<string, unknown> }, w, o),
      TypeError,
    );
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

test('a stale .tmp file is ignored by list and loadLatest and removed by the next save', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const { w, o } = arrays(1);
    await store.save(metaAt(1), w, o);
    const crashed = path.join(dir, `${checkpointFileName(9)}.tmp`);
    const ownCrashed = path.join(dir, `${checkpointFileName(8)}.${process.pid}-deadbeef.tmp`);
    await fs.writeFile(crashed, Buffer.from('RTCKPT01 partial'));
    await fs.writeFile(ownCrashed, Buffer.from('partial'));
    assert.deepEqual(await store.list(), [path.join(dir, checkpointFileName(1))]);
    const loaded = await store.loadLatest();
    assertCheckpoint(loaded.checkpoint, 1, 1);
    assert.deepEqual(loaded.skipped, []);
    await store.save(metaAt(2), arrays(2).w, arrays(2).o);
    assert.deepEqual((await fs.readdir(dir)).sort(), [checkpointFileName(1), checkpointFileName(2)]);
  });
});

test('concurrent saves do not corrupt each other', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir, { keep: 10 });
    const other = new CheckpointStore(dir, { keep: 10 });
    const big = (seed: number) => arrays(seed, 200_000, 400_000);
    const inputs = [1, 2, 3, 4].map((seed) => big(seed));
    const files = await Promise.all([
      store.save(metaAt(100), inputs[0].w, inputs[0].o),
      store.save(metaAt(200), inputs[1].w, inputs[1].o),
      other.save(metaAt(300), inputs[2].w, inputs[2].o),
      other.save(metaAt(300), inputs[3].w, inputs[3].o), // same step from two saves at once: one whole file wins
    ]);
    assert.deepEqual((await fs.readdir(dir)).sort(), [100, 200, 300].map(checkpointFileName));
    for (const [i, step] of [
      [0, 100],
      [1, 200],
    ] as const) {
      const cp = await CheckpointStore.read(files[i]);
      assert.equal(cp.meta.step, step);
      assert.ok(sameBits(cp.weights, inputs[i].w) && sameBits(cp.optimizer, inputs[i].o));
    }
    const last = await CheckpointStore.read(files[3]);
    assert.ok(sameBits(last.weights, inputs[3].w) && sameBits(last.optimizer, inputs[3].o), 'saves run in call order');
  });
});

test('arrays changed after save() is called do not change what is written', async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir);
    const { w, o } = arrays(1);
    const pending = store.save(metaAt(1), w, o);
    w.fill(0);
    o.fill(0);
    assertCheckpoint(await CheckpointStore.read(await pending), 1, 1);
  });
});

test('a process killed while saving leaves only verifiable checkpoints; its temp files are cleaned by the next save', async () => {
  await withTempDir(async (dir) => {
    const moduleUrl = new URL('../coordinator/checkpoints.js', import.meta.url).href;
    const script = `
      const { CheckpointStore } = await import(${JSON.stringify(moduleUrl)});
      const store = new CheckpointStore(process.argv[1], { keep: 2 });
      const w = new Float32Array(250_000).map((_, i) => i);
      const o = new Float32Array(250_000).map((_, i) => -i);
      for (let step = 1; ; step++) {
        await store.save({ runId: 'crash', step, epoch: 0, consumed: step, generation: 1, config: {} }, w, o);
      }`;
    // Kill the child as soon as the temp file of its second save appears: the first save is final, the second is
    // (almost always) mid-write.
    const secondTemp = new Promise<string>((resolve) => {
      const watcher = watch(dir, (_event, name) => {
        if (name && name.startsWith(checkpointFileName(2)) && name.endsWith('.tmp')) {
          watcher.close();
          resolve(name);
        }
      });
    });
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    const early = exited.then(() => {
      throw new Error('child exited before its second save');
    });
    try {
      await Promise.race([secondTemp, early]);
    } finally {
      child.kill('SIGKILL');
    }
    assert.equal(await exited, 'SIGKILL');

    const store = new CheckpointStore(dir, { keep: 2 });
    const files = await store.list();
    assert.ok(files.length >= 1);
    for (const file of files) assert.equal((await CheckpointStore.read(file)).meta.runId, 'crash');
    const { checkpoint, skipped } = await store.loadLatest();
    assert.deepEqual(skipped, []);
    assert.ok(checkpoint && checkpoint.weights[123] === 123 && checkpoint.optimizer[456] === -456);
    await store.save({ ...checkpoint.meta, step: checkpoint.meta.step + 1 }, checkpoint.weights, checkpoint.optimizer);
    assert.deepEqual(
      (await fs.readdir(dir)).filter((name) => name.endsWith('.tmp')),
      [],
    );
  });
});

test("pruning counts only the run's own checkpoints: another run's higher steps never push ours out", async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir, { keep: 2 });
    for (const step of [900, 1000, 1100]) {
      const { w, o } = arrays(step, 4, 4);
      await store.save({ ...metaAt(step), runId: 'old-run' }, w, o);
    }
    for (const step of [100, 200, 300]) {
      const { w, o } = arrays(step, 4, 4);
      await store.save({ ...metaAt(step), runId: 'new-run' }, w, o);
    }
    const names = (await store.list()).map((f) => path.basename(f));
    assert.deepEqual(names, [1100, 1000, 300, 200].map(checkpointFileName), 'two of ours kept, theirs untouched');
  });
});

test("loadLatest(runId) skips another run's newer checkpoint with a typed error, and finds the run's own", async () => {
  await withTempDir(async (dir) => {
    const store = new CheckpointStore(dir, { keep: 5 });
    const { w, o } = arrays(1, 4, 4);
    await store.save({ ...metaAt(10), runId: 'mine' }, w, o);
    await store.save({ ...metaAt(50), runId: 'theirs' }, w, o);
    const { checkpoint, skipped } = await store.loadLatest('mine');
    assert.equal(checkpoint?.meta.step, 10);
    assert.equal(skipped.length, 1);
    assert.ok(skipped[0]!.error instanceof CheckpointRunMismatchError);
    assert.equal(skipped[0]!.error.code, 'CHECKPOINT_OTHER_RUN');
    assert.equal((await store.loadLatest('nobody')).checkpoint, undefined);
    assert.equal((await store.loadLatest()).checkpoint?.meta.step, 50, 'without a run id: the newest');
    assert.equal((await CheckpointStore.readMeta(path.join(dir, checkpointFileName(50)))).runId, 'theirs');
  });
});
