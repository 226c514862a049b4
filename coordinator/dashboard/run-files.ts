/**
 * A run's event stream on disk, so a finished run (or one going on elsewhere) can be shown from its folder alone.
 *
 *   RUN_DIR/events.jsonl   one line per run event, in the order the coordinator emitted them:
 *                          {"at": <unix ms>, "event": <RunEvent>}   (NaN/Infinity losses are written as null)
 *
 * The recorder is one more observer of the coordinator's event stream. The reader replays the file into the same
 * DashboardState the live coordinator feeds, then (with `follow`) keeps reading what is appended: a run still going
 * elsewhere is a tail of its file. Lines that do not parse or do not look like a run event are counted and skipped:
 * a file is input, and nothing in it may crash the reader.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, DataNotFoundError } from '../../shared/errors.js';
import type { StepRecord } from '../../shared/wire/protocol.js';
import type { RunEvent, RunObserver } from '../events.js';

export const EVENTS_FILE = 'events.jsonl';

export interface EventRecorder {
  observe: RunObserver;
  close(): Promise<void>;
}

/** Append every run event to RUN_DIR/events.jsonl. */
export function createEventRecorder(runDir: string): EventRecorder {
  const file = path.join(runDir, EVENTS_FILE);
  try {
    fs.mkdirSync(runDir, { recursive: true });
  } catch (err) {
    throw new ConfigError(`cannot write '${file}': ${(err as Error).message}`, { cause: err });
  }
  const stream = fs.createWriteStream(file, { flags: 'a' });
  let failure: Error | undefined;
  stream.on('error', (err) => {
    failure ??= err;
  });
  let closing: Promise<void> | undefined;
  return {
    observe(event, at) {
      if (failure || closing) return;
      stream.write(`${JSON.stringify({ at, event })}\n`);
    },
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        const settle = (): void => (failure ? reject(failure) : resolve());
        if (stream.destroyed) return settle();
        stream.once('close', settle);
        stream.end();
      });
      return closing;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Validation of what comes back from disk

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): v is string => typeof v === 'string';

function isWorker(v: unknown): boolean {
  return isObj(v) && isStr(v.id) && isNum(v.rank) && isStr(v.host) && isStr(v.backend) && isStr(v.state);
}

const RECORD_NUMBERS = [
  'epoch',
  'step',
  'samples',
  'dataMs',
  'computeMs',
  'allreduceMs',
  'applyMs',
  'reduceScatterMs',
  'startedAt',
] as const;

/** A step record; a null loss was a NaN or an infinity before JSON. */
function toRecord(v: unknown): StepRecord | undefined {
  if (!isObj(v) || !RECORD_NUMBERS.every((k) => isNum(v[k]))) return undefined;
  if (v.loss !== null && typeof v.loss !== 'number') return undefined;
  return { ...(v as unknown as StepRecord), loss: v.loss === null ? NaN : (v.loss as number) };
}

function validShape(e: Obj): boolean {
  switch (e.kind) {
    case 'runStarted':
      return isStr(e.runId) && isStr(e.model) && isNum(e.epochs) && isNum(e.minWorkers) && isNum(e.batchSize);
    case 'workerJoined':
      return isWorker(e.worker);
    case 'workerLeft':
      return isWorker(e.worker) && isStr(e.reason);
    case 'ringFormed':
      return isNum(e.gen) && Array.isArray(e.workers) && e.workers.every(isWorker);
    case 'epochStarted':
      return isNum(e.epoch) && isNum(e.epochs) && isNum(e.samples);
    case 'steps':
      return isNum(e.gen) && isNum(e.rank) && Array.isArray(e.records);
    case 'epochFinished':
      return isObj(e.outcome) && isNum(e.outcome.epoch);
    case 'notice':
      return isStr(e.level) && ['info', 'warn', 'error'].includes(e.level) && isStr(e.message);
    case 'runEnded':
      return isObj(e.summary) && isStr(e.summary.outcome);
    default:
      return false;
  }
}

/** One line of events.jsonl as an event and its time, or undefined when it is not one. */
export function parseEventLine(line: string): { at: number; event: RunEvent } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isObj(parsed) || !isNum(parsed.at) || !isObj(parsed.event) || !validShape(parsed.event)) return undefined;
  const e = parsed.event;
  if (e.kind === 'steps') {
    const records = (e.records as unknown[]).map(toRecord);
    if (records.some((r) => r === undefined)) return undefined;
    return {
      at: parsed.at,
      event: { ...(e as unknown as RunEvent & { kind: 'steps' }), records: records as StepRecord[] },
    };
  }
  if (e.kind === 'notice' && e.fields !== undefined && !isObj(e.fields)) return undefined;
  return { at: parsed.at, event: e as unknown as RunEvent };
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface RunReaderOptions {
  /** Keep reading what is appended (a run going on elsewhere); default false. */
  follow?: boolean;
  /** How often to look for appended lines when following, ms (default 500). */
  pollMs?: number;
}

export interface RunReader {
  /** Lines read that were not run events. */
  readonly skipped: number;
  /** Events replayed so far. */
  readonly events: number;
  close(): void;
}

/** Events of a run folder: its events.jsonl, or what its older files (metrics.jsonl, logs) tell (legacy.ts). */
export function hasEventsFile(runDir: string): boolean {
  return fs.existsSync(path.join(runDir, EVENTS_FILE));
}

/**
 * Replay RUN_DIR/events.jsonl into `observe`, synchronously (the run is in the state when this returns), then
 * follow the file if asked. A half-written last line waits for the rest of it.
 */
export function readRunEvents(runDir: string, observe: RunObserver, opts: RunReaderOptions = {}): RunReader {
  const file = path.join(runDir, EVENTS_FILE);
  if (!fs.existsSync(file)) throw new DataNotFoundError(file);
  let offset = 0;
  let partial = '';
  let skipped = 0;
  let events = 0;
  const readMore = (): void => {
    let fd: number | undefined;
    try {
      const size = fs.statSync(file).size;
      if (size < offset) [offset, partial] = [0, '']; // truncated or replaced: read it again
      if (size === offset) return;
      fd = fs.openSync(file, 'r');
      const buf = Buffer.alloc(size - offset);
      const n = fs.readSync(fd, buf, 0, buf.length, offset);
      offset += n;
      const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        const parsed = parseEventLine(line);
        if (!parsed) skipped++;
        else {
          events++;
          observe(parsed.event, parsed.at);
        }
      }
    } catch {
      // A file that went away while following: keep what was read.
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  };
  readMore();
  const timer = opts.follow ? setInterval(readMore, opts.pollMs ?? 500) : undefined;
  timer?.unref();
  return {
    get skipped() {
      return skipped;
    },
    get events() {
      return events;
    },
    close() {
      clearInterval(timer);
    },
  };
}

/** The model a run saved in RUN_DIR/model/ (model.json + weights), read when asked, so a model saved later shows. */
export function runModelSource(runDir: string): { file(name: string): Promise<Buffer | undefined> } {
  const dir = path.join(runDir, 'model');
  return {
    async file(name) {
      // The server only passes plain file names; refuse anything else here too.
      if (name !== path.basename(name) || name.startsWith('.')) return undefined;
      return fs.promises.readFile(path.join(dir, name)).catch(() => undefined);
    },
  };
}
