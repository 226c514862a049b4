/**
 * The coordinator's checkpoint store: the replicated model state (weights and optimizer slots) plus where training
 * stood, written so that a crash at any instant leaves either the previous checkpoint or the new one, never a partial
 * file under a final name, and read back only after every byte has been verified.
 *
 * File format (all integers little-endian), one file per checkpoint, named `ckpt-<step, zero-padded to 10>.rtckpt`:
 *
 *   offset  size  field
 *   0       8     magic, ASCII `RTCKPT01` (the trailing `01` is the format version)
 *   8       4     u32 header length H in bytes (1 .. 1 MiB)
 *   12      H     header: UTF-8 JSON object, right-padded with ASCII spaces so that 12 + H is a multiple of 8
 *                 (the payload then starts 8-byte aligned), with the fields
 *                   meta             CheckpointMeta (runId, step, epoch, consumed, generation, config, extra?, createdAt)
 *                   weightsLength    number of float32 weights W
 *                   optimizerLength  number of float32 optimizer values O
 *                   sha256           lowercase hex SHA-256 of the payload bytes
 *                   metaSha256       lowercase hex SHA-256 of JSON.stringify(meta) as UTF-8; the payload hash alone
 *                                    would let a flipped digit in `step` or `consumed` resume at the wrong place
 *   12+H    4W    weights, float32 LE
 *   12+H+4W 4O    optimizer state, float32 LE
 *
 * The file length must be exactly 12 + H + 4W + 4O. When the name carries a step, it must equal `meta.step`.
 *
 * Writing: a temp file `ckpt-<step>.rtckpt.<pid>-<random>.tmp` in the same directory is written, fsynced, renamed
 * over the final name (atomic on POSIX, and on Windows via Node's replace-existing rename) and the directory is
 * fsynced so the rename itself survives a power cut. Saves to one directory are serialised within the process, so a
 * save's cleanup of leftover temp files never races another save's temp file; temp files of other live processes
 * are left alone.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CheckpointCorruptError, CheckpointRunMismatchError, DataNotFoundError } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/log.js';
import { HOST_IS_LITTLE_ENDIAN } from '../shared/wire/protocol.js';

export interface CheckpointMeta {
  runId: string;
  /** Global training steps completed (the state is after this many steps). */
  step: number;
  epoch: number;
  /** Samples of this epoch's permutation already consumed. */
  consumed: number;
  generation: number;
  /** The training configuration (a JSON object), stored so a resume needs no options. */
  config: Record<string, unknown>;
  /** Anything else the coordinator wants back (e.g. run-state history); JSON. */
  extra?: Record<string, unknown>;
  /** ISO time the checkpoint was written. */
  createdAt: string;
}

export interface Checkpoint {
  meta: CheckpointMeta;
  weights: Float32Array;
  optimizer: Float32Array;
  /** The file it was read from. */
  file: string;
}

export interface CheckpointStoreOptions {
  /** How many checkpoint files to keep (newest first); default 3, at least 1. */
  keep?: number;
  log?: Logger;
}

export const CHECKPOINT_MAGIC = 'RTCKPT01';
/** Largest header accepted; a real header is a few KB, so anything bigger is a corrupt length field. */
export const MAX_HEADER_BYTES = 1 << 20;
const PREAMBLE_BYTES = 12;
const PAYLOAD_ALIGN = 8;
const CHECKPOINT_NAME = /^ckpt-(\d+)\.rtckpt$/;
const TEMP_NAME = /^ckpt-.*\.tmp$/;
const TEMP_OWNER = /\.(\d+)-[0-9a-f]+\.tmp$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

interface CheckpointHeader {
  meta: CheckpointMeta;
  weightsLength: number;
  optimizerLength: number;
  sha256: string;
  metaSha256: string;
}

/** The file name of the checkpoint after `step` steps. */
export function checkpointFileName(step: number): string {
  return `ckpt-${String(step).padStart(10, '0')}.rtckpt`;
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

/** The float32 values as little-endian bytes; a view without copying on little-endian hosts. */
function float32LeBytes(values: Float32Array): Buffer {
  if (HOST_IS_LITTLE_ENDIAN) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.allocUnsafe(values.byteLength);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
  return out;
}

/** A fresh Float32Array (owning exactly its own buffer) from little-endian bytes. */
function float32FromLe(bytes: Buffer, start: number, count: number): Float32Array {
  if (HOST_IS_LITTLE_ENDIAN) {
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + count * 4));
  }
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(start + i * 4);
  return out;
}

function sha256Hex(...parts: Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

/**
 * The bytes of a checkpoint file, as the buffers to write in order (the payload buffers are views of the arrays on
 * little-endian hosts, so nothing large is copied). Throws TypeError when `meta` would not read back as valid.
 */
export function encodeCheckpoint(meta: CheckpointMeta, weights: Float32Array, optimizer: Float32Array): Buffer[] {
  const metaJson = JSON.stringify(meta);
  const problem = metaProblem(JSON.parse(metaJson));
  if (problem) throw new TypeError(`invalid checkpoint meta: ${problem}`);
  const weightBytes = float32LeBytes(weights);
  const optimizerBytes = float32LeBytes(optimizer);
  const header: CheckpointHeader = {
    meta,
    weightsLength: weights.length,
    optimizerLength: optimizer.length,
    sha256: sha256Hex(weightBytes, optimizerBytes),
    metaSha256: sha256Hex(Buffer.from(metaJson, 'utf8')),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padding = (PAYLOAD_ALIGN - ((PREAMBLE_BYTES + json.length) % PAYLOAD_ALIGN)) % PAYLOAD_ALIGN;
  const headerLength = json.length + padding;
  if (headerLength > MAX_HEADER_BYTES) {
    throw new TypeError(
      `checkpoint header is ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit (meta too large)`,
    );
  }
  const head = Buffer.alloc(PREAMBLE_BYTES + headerLength, 0x20);
  head.write(CHECKPOINT_MAGIC, 0, 'ascii');
  head.writeUInt32LE(headerLength, 8);
  json.copy(head, PREAMBLE_BYTES);
  return [head, weightBytes, optimizerBytes];
}

// ---------------------------------------------------------------------------------------------------------------
// Verification

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** What is wrong with a parsed meta object, or undefined when it is a valid CheckpointMeta. */
function metaProblem(meta: unknown): string | undefined {
  if (!isPlainObject(meta)) return 'meta is not an object';
  if (typeof meta.runId !== 'string') return 'meta.runId is not a string';
  for (const field of ['step', 'epoch', 'consumed', 'generation'] as const) {
    if (!isCount(meta[field])) return `meta.${field} is not a non-negative integer (${JSON.stringify(meta[field])})`;
  }
  if (!isPlainObject(meta.config)) return 'meta.config is not an object';
  if (meta.extra !== undefined && !isPlainObject(meta.extra)) return 'meta.extra is not an object';
  if (typeof meta.createdAt !== 'string' || Number.isNaN(Date.parse(meta.createdAt))) {
    return 'meta.createdAt is not an ISO time';
  }
  return undefined;
}

/** What is wrong with a parsed header object, or undefined when it has the right fields and types. */
function headerProblem(header: unknown): string | undefined {
  if (!isPlainObject(header)) return 'header is not a JSON object';
  const meta = metaProblem(header.meta);
  if (meta) return `header ${meta}`;
  if (!isCount(header.weightsLength)) return 'header.weightsLength is not a non-negative integer';
  if (!isCount(header.optimizerLength)) return 'header.optimizerLength is not a non-negative integer';
  if (typeof header.sha256 !== 'string' || !SHA256_HEX.test(header.sha256))
    return 'header.sha256 is not a SHA-256 hex digest';
  if (typeof header.metaSha256 !== 'string' || !SHA256_HEX.test(header.metaSha256)) {
    return 'header.metaSha256 is not a SHA-256 hex digest';
  }
  return undefined;
}

/** Check the preamble and parse the header; throws CheckpointCorruptError naming `file`. */
function parseHeader(file: string, bytes: Buffer): { header: CheckpointHeader; payloadStart: number } {
  const corrupt = (detail: string, cause?: unknown) => new CheckpointCorruptError(file, detail, { cause });
  if (bytes.length < PREAMBLE_BYTES) {
    throw corrupt(`file is ${bytes.length} bytes, shorter than the ${PREAMBLE_BYTES}-byte preamble (truncated)`);
  }
  const magic = bytes.subarray(0, 8);
  if (!magic.equals(Buffer.from(CHECKPOINT_MAGIC, 'ascii'))) {
    throw corrupt(`bad magic ${JSON.stringify(magic.toString('latin1'))} (expected ${CHECKPOINT_MAGIC})`);
  }
  const headerLength = bytes.readUInt32LE(8);
  if (headerLength === 0 || headerLength > MAX_HEADER_BYTES) {
    throw corrupt(`header length ${headerLength} is not sane (must be 1..${MAX_HEADER_BYTES})`);
  }
  const payloadStart = PREAMBLE_BYTES + headerLength;
  if (payloadStart > bytes.length) {
    throw corrupt(`header length ${headerLength} runs past the end of the ${bytes.length}-byte file (truncated)`);
  }
  let parsed: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(PREAMBLE_BYTES, payloadStart));
    parsed = JSON.parse(text);
  } catch (err) {
    throw corrupt(`header is not valid UTF-8 JSON: ${(err as Error).message}`, err);
  }
  const problem = headerProblem(parsed);
  if (problem) throw corrupt(problem);
  return { header: parsed as CheckpointHeader, payloadStart };
}

/** Verify a whole checkpoint file's bytes and decode it; throws CheckpointCorruptError naming `file`. */
export function decodeCheckpoint(file: string, bytes: Buffer): Checkpoint {
  const { header, payloadStart } = parseHeader(file, bytes);
  const expectedLength = payloadStart + 4 * (header.weightsLength + header.optimizerLength);
  if (bytes.length !== expectedLength) {
    const why = bytes.length < expectedLength ? 'truncated' : 'trailing bytes';
    throw new CheckpointCorruptError(
      file,
      `file is ${bytes.length} bytes but its header describes ${expectedLength} (${why})`,
    );
  }
  const payloadHash = sha256Hex(bytes.subarray(payloadStart));
  if (payloadHash !== header.sha256) {
    throw new CheckpointCorruptError(file, `payload sha256 mismatch (header ${header.sha256}, content ${payloadHash})`);
  }
  let metaJson: string;
  try {
    metaJson = JSON.stringify(header.meta);
  } catch (err) {
    // JSON.parse accepts nesting deeper than JSON.stringify's recursion can re-serialise (a RangeError).
    throw new CheckpointCorruptError(file, `header meta cannot be re-serialised: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const metaHash = sha256Hex(Buffer.from(metaJson, 'utf8'));
  if (metaHash !== header.metaSha256) {
    throw new CheckpointCorruptError(file, `meta sha256 mismatch (header ${header.metaSha256}, content ${metaHash})`);
  }
  const named = CHECKPOINT_NAME.exec(path.basename(file));
  if (named && Number(named[1]) !== header.meta.step) {
    throw new CheckpointCorruptError(
      file,
      `file name says step ${Number(named[1])} but the header says ${header.meta.step}`,
    );
  }
  const weightsEnd = payloadStart + 4 * header.weightsLength;
  return {
    meta: header.meta,
    weights: float32FromLe(bytes, payloadStart, header.weightsLength),
    optimizer: float32FromLe(bytes, weightsEnd, header.optimizerLength),
    file,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// File system helpers

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Write every byte of every buffer (FileHandle.write may write less than asked). */
async function writeAll(handle: fs.FileHandle, buffers: Buffer[]): Promise<number> {
  let position = 0;
  for (const buffer of buffers) {
    let offset = 0;
    while (offset < buffer.length) {
      const { bytesWritten } = await handle.write(buffer, offset, buffer.length - offset, position);
      offset += bytesWritten;
      position += bytesWritten;
    }
  }
  return position;
}

/** Make a rename in `dir` durable. Some platforms (Windows) and file systems cannot fsync a directory; that is not an error. */
async function fsyncDirectory(dir: string, log: Logger): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EACCES')
      throw err;
    log.debug({ dir, code }, 'directory fsync not supported here');
  } finally {
    await handle?.close();
  }
}

/** Whether a process with this id exists (EPERM means it exists but belongs to someone else). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** Saves to one directory run one at a time within this process, whichever store instance starts them. */
const directoryQueues = new Map<string, Promise<void>>();

function serialised<T>(dir: string, task: () => Promise<T>): Promise<T> {
  const previous = directoryQueues.get(dir) ?? Promise.resolve();
  const result = previous.then(task);
  const tail = result.then(
    () => undefined,
    () => undefined,
  );
  directoryQueues.set(dir, tail);
  void tail.then(() => {
    if (directoryQueues.get(dir) === tail) directoryQueues.delete(dir);
  });
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// The store

export class CheckpointStore {
  readonly dir: string;
  readonly keep: number;
  private readonly log: Logger;

  constructor(dir: string, opts: CheckpointStoreOptions = {}) {
    const keep = opts.keep ?? 3;
    if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`keep must be an integer >= 1, got ${keep}`);
    this.dir = dir;
    this.keep = keep;
    this.log = opts.log ?? silentLogger();
  }

  /**
   * Atomically write a checkpoint (temp file, fsync, rename, fsync of the directory), then delete all but the newest
   * `keep` checkpoints (never the one just written) and any temp files left by a crashed save. Returns the final path.
   */
  async save(meta: Omit<CheckpointMeta, 'createdAt'>, weights: Float32Array, optimizer: Float32Array): Promise<string> {
    const full: CheckpointMeta = {
      runId: meta.runId,
      step: meta.step,
      epoch: meta.epoch,
      consumed: meta.consumed,
      generation: meta.generation,
      config: meta.config,
      ...(meta.extra !== undefined ? { extra: meta.extra } : {}),
      createdAt: new Date().toISOString(),
    };
    // Encode before queueing (this part runs synchronously, so saves queue in call order) so invalid meta fails fast; copy the arrays so that a caller reusing them while the
    // save waits its turn cannot make the written bytes disagree with the checksum.
    const buffers = encodeCheckpoint(full, weights.slice(), optimizer.slice());
    return serialised(path.resolve(this.dir), () => this.writeAndPrune(full.step, buffers));
  }

  private async writeAndPrune(step: number, buffers: Buffer[]): Promise<string> {
    const started = performance.now();
    await fs.mkdir(this.dir, { recursive: true });
    await this.removeStaleTempFiles();
    const finalPath = path.join(this.dir, checkpointFileName(step));
    const tempPath = `${finalPath}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    let bytes: number;
    try {
      const handle = await fs.open(tempPath, 'wx');
      try {
        bytes = await writeAll(handle, buffers);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(tempPath, finalPath);
    } catch (err) {
      await fs.rm(tempPath, { force: true });
      throw err;
    }
    await fsyncDirectory(this.dir, this.log);
    this.log.info({ file: finalPath, step, bytes, ms: Math.round(performance.now() - started) }, 'checkpoint saved');
    await this.prune(finalPath);
    return finalPath;
  }

  /** Delete temp files of crashed saves: ours (none are in flight while we hold the queue), unnamed, or of dead processes. */
  private async removeStaleTempFiles(): Promise<void> {
    for (const name of await fs.readdir(this.dir)) {
      if (!TEMP_NAME.test(name)) continue;
      const owner = TEMP_OWNER.exec(name);
      const ownerPid = owner ? Number(owner[1]) : undefined;
      if (ownerPid !== undefined && ownerPid !== process.pid && processAlive(ownerPid)) continue;
      await fs.rm(path.join(this.dir, name), { force: true });
      this.log.warn({ file: path.join(this.dir, name) }, 'removed a partial checkpoint left by an interrupted save');
    }
  }

  /**
   * Keep the newest `keep` checkpoints of the run just written, always including the one just written (it may be older
   * than a corrupt file). Files of other runs are not this run's to delete, nor are files that cannot be read.
   */
  private async prune(justWritten: string): Promise<void> {
    const runId = (await CheckpointStore.readMeta(justWritten)).runId;
    const ours: string[] = [];
    for (const file of await this.list()) {
      if (file === justWritten) continue;
      const meta = await CheckpointStore.readMeta(file).catch(() => undefined);
      if (meta?.runId === runId) ours.push(file);
    }
    for (const file of ours.slice(this.keep - 1)) {
      try {
        await fs.rm(file, { force: true });
        this.log.debug({ file }, 'old checkpoint removed');
      } catch (err) {
        // The new checkpoint is already durable; a leftover old file costs only disk space.
        this.log.warn({ file, err }, 'could not remove an old checkpoint');
      }
    }
  }

  /** Checkpoint files, newest first: by the step in the name, then by mtime. Temp files are not listed. */
  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    const entries: { file: string; step: number; mtimeMs: number }[] = [];
    for (const name of names) {
      const match = CHECKPOINT_NAME.exec(name);
      if (!match) continue;
      const file = path.join(this.dir, name);
      try {
        const stat = await fs.stat(file);
        if (stat.isFile()) entries.push({ file, step: Number(match[1]), mtimeMs: stat.mtimeMs });
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err; // removed since readdir
      }
    }
    entries.sort(
      (a, b) => b.step - a.step || b.mtimeMs - a.mtimeMs || (a.file < b.file ? 1 : a.file > b.file ? -1 : 0),
    );
    return entries.map((e) => e.file);
  }

  /**
   * The newest checkpoint that verifies (of run `runId`, when given). Each newer file that does not verify, or belongs
   * to another run, is logged and returned in `skipped`; `checkpoint` is undefined when no file qualifies.
   */
  async loadLatest(runId?: string): Promise<{
    checkpoint?: Checkpoint;
    skipped: Array<{ file: string; error: CheckpointCorruptError | CheckpointRunMismatchError }>;
  }> {
    const skipped: Array<{ file: string; error: CheckpointCorruptError | CheckpointRunMismatchError }> = [];
    for (const file of await this.list()) {
      try {
        const checkpoint = await CheckpointStore.read(file);
        if (runId !== undefined && checkpoint.meta.runId !== runId)
          throw new CheckpointRunMismatchError(file, runId, checkpoint.meta.runId);
        this.log.info({ file, step: checkpoint.meta.step, skipped: skipped.length }, 'checkpoint loaded');
        return { checkpoint, skipped };
      } catch (err) {
        if (err instanceof DataNotFoundError) continue; // pruned by another process since list()
        if (err instanceof CheckpointRunMismatchError) {
          this.log.warn({ file, runId: err.actualRunId, code: err.code }, 'checkpoint of another run; skipped');
          skipped.push({ file, error: err });
          continue;
        }
        if (!(err instanceof CheckpointCorruptError)) throw err;
        this.log.error({ file, problem: err.message }, 'checkpoint is corrupt; falling back to the previous one');
        skipped.push({ file, error: err });
      }
    }
    return { skipped };
  }

  /** The meta of a checkpoint file, from its header alone (not verified against the payload). */
  static async readMeta(file: string): Promise<CheckpointMeta> {
    const handle = await fs.open(file, 'r');
    try {
      const preamble = Buffer.alloc(PREAMBLE_BYTES);
      await handle.read(preamble, 0, PREAMBLE_BYTES, 0);
      const length = Math.min(preamble.readUInt32LE(8), MAX_HEADER_BYTES);
      const head = Buffer.alloc(PREAMBLE_BYTES + length);
      preamble.copy(head);
      await handle.read(head, PREAMBLE_BYTES, length, PREAMBLE_BYTES);
      return parseHeader(file, head).header.meta;
    } finally {
      await handle.close();
    }
  }

  /**
   * Read and verify one checkpoint file. Throws CheckpointCorruptError naming the file when its content is wrong or
   * it cannot be read, DataNotFoundError when it does not exist.
   */
  static async read(file: string): Promise<Checkpoint> {
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(file);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new DataNotFoundError(file, { cause: err });
      throw new CheckpointCorruptError(file, `cannot be read (${errnoCode(err) ?? String(err)})`, { cause: err });
    }
    return decodeCheckpoint(file, bytes);
  }
}
