/**
 * `--timeline PATH`: a Chrome trace event file of the run, as Horovod's timeline writes, for Perfetto
 * (ui.perfetto.dev) or chrome://tracing.
 *
 * Format: the JSON array form of the trace event format. Events are appended as step reports arrive, so a run that
 * crashes leaves a file the viewers still open (they accept a missing closing bracket); `close()` writes the bracket,
 * which makes the file valid JSON.
 *
 * Layout: one process per rank (pid = rank + 1, named "worker N" for rank N: Perfetto treats pid 0 as the kernel's
 * idle task, so no worker gets it), one thread with nested complete ('X') events per
 * step: `step` > `data`, `compute`, `allreduce` (> `allreduce:reduce-scatter`, `allreduce:allgather`), `apply`.
 * Span boundaries come from the worker's `startedAt` (wall clock, ms) plus the phase durations in order, rounded to
 * whole microseconds once so children nest exactly inside their parents. The coordinator is one more process
 * (COORDINATOR_PID) with instant events for membership changes, epochs and notices.
 *
 * Bounded: a TimelineBuffer keeps the latest `maxSteps` steps of every rank and the latest `maxInstants` instant
 * events (the dashboard's /timeline.json download). The file writer appends as events arrive until a rank passes
 * `maxSteps` steps; from then on it rewrites the file from its buffer (atomically, every `rewriteMs` and at close),
 * so a long run's file holds its latest steps and never grows past the buffer's size.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../shared/errors.js';
import type { StepRecord } from '../shared/wire/protocol.js';
import type { RunEvent, RunObserver } from './events.js';

/** Above any plausible rank, so the coordinator never shares a process row with a worker. */
export const COORDINATOR_PID = 1_000_000;

/** The trace process of a rank. */
export function workerPid(rank: number): number {
  return rank + 1;
}
const STEP_TID = 0;

export interface TraceEvent {
  name: string;
  ph: 'X' | 'i' | 'M';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  /** Scope of an instant event: g = global, p = process, t = thread. */
  s?: 'g' | 'p' | 't';
  args?: Record<string, unknown>;
}

export interface TimelineWriter {
  observe: RunObserver;
  /** Write the closing bracket and close the file; rejects if writing failed at any point. */
  close(): Promise<void>;
}

const us = (ms: number): number => Math.round(ms * 1000);

/** The nested spans of one step of one rank. */
export function stepSpans(rank: number, gen: number, r: StepRecord): TraceEvent[] {
  const rs = Math.min(Math.max(0, r.reduceScatterMs), Math.max(0, r.allreduceMs));
  // Cumulative phase boundaries in ms from the step start; each is rounded once and shared by neighbouring spans.
  const edges: number[] = [];
  let t = r.startedAt;
  for (const d of [0, r.dataMs, r.computeMs, rs, r.allreduceMs - rs, r.applyMs]) {
    t += Math.max(0, d);
    edges.push(us(t));
  }
  const [start, dataEnd, computeEnd, scatterEnd, allreduceEnd, end] = edges as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const span = (name: string, cat: string, from: number, to: number, args?: Record<string, unknown>): TraceEvent => ({
    name,
    cat,
    ph: 'X',
    pid: workerPid(rank),
    tid: STEP_TID,
    ts: from,
    dur: to - from,
    ...(args ? { args } : {}),
  });
  return [
    span('step', 'step', start, end, {
      step: r.step,
      epoch: r.epoch,
      gen,
      samples: r.samples,
      loss: Number.isFinite(r.loss) ? r.loss : String(r.loss),
    }),
    span('data', 'data', start, dataEnd),
    span('compute', 'compute', dataEnd, computeEnd),
    span('allreduce', 'allreduce', computeEnd, allreduceEnd),
    span('allreduce:reduce-scatter', 'allreduce', computeEnd, scatterEnd),
    span('allreduce:allgather', 'allreduce', scatterEnd, allreduceEnd),
    span('apply', 'apply', allreduceEnd, end),
  ];
}

function processMeta(pid: number, name: string, sortIndex: number, threadName: string): TraceEvent[] {
  return [
    { name: 'process_name', ph: 'M', pid, tid: 0, args: { name } },
    { name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: sortIndex } },
    { name: 'thread_name', ph: 'M', pid, tid: STEP_TID, args: { name: threadName } },
  ];
}

/** Turns run events into trace events; remembers which ranks already have their process metadata. */
class TraceBuilder {
  private readonly namedRanks = new Set<number>();
  private readonly hosts = new Map<number, string>();

  start(): TraceEvent[] {
    return processMeta(COORDINATOR_PID, 'coordinator', -1, 'events');
  }

  private instant(at: number, name: string, scope: 'g' | 'p', args?: Record<string, unknown>): TraceEvent {
    return {
      name,
      cat: 'run',
      ph: 'i',
      s: scope,
      pid: COORDINATOR_PID,
      tid: STEP_TID,
      ts: us(at),
      ...(args ? { args } : {}),
    };
  }

  private rankMeta(rank: number): TraceEvent[] {
    if (this.namedRanks.has(rank)) return [];
    this.namedRanks.add(rank);
    const meta = processMeta(workerPid(rank), `worker ${rank}`, rank, 'steps');
    const host = this.hosts.get(rank);
    if (host) meta.push({ name: 'process_labels', ph: 'M', pid: workerPid(rank), tid: 0, args: { labels: host } });
    return meta;
  }

  events(event: RunEvent, at: number): TraceEvent[] {
    switch (event.kind) {
      case 'runStarted':
        return [this.instant(at, 'run started', 'g', { runId: event.runId, model: event.model })];
      case 'workerJoined':
        return [this.instant(at, 'worker joined', 'p', { host: event.worker.host })];
      case 'workerLeft':
        return [
          this.instant(at, `worker ${event.worker.state}`, 'p', {
            rank: event.worker.rank,
            host: event.worker.host,
            reason: event.reason,
          }),
        ];
      case 'ringFormed':
        for (const w of event.workers) this.hosts.set(w.rank, w.host);
        return [this.instant(at, `ring formed (generation ${event.gen})`, 'g', { workers: event.workers.length })];
      case 'epochStarted':
        return [this.instant(at, `epoch ${event.epoch + 1} started`, 'g')];
      case 'epochFinished':
        return [this.instant(at, `epoch ${event.outcome.epoch} finished`, 'g', { ...event.outcome })];
      case 'notice':
        return [this.instant(at, event.message, 'p', { level: event.level })];
      case 'runEnded':
        return [this.instant(at, `run ${event.summary.outcome}`, 'g')];
      case 'steps':
        return [...this.rankMeta(event.rank), ...event.records.flatMap((r) => stepSpans(event.rank, event.gen, r))];
    }
  }
}

export interface TimelineLimits {
  /** Steps kept per rank (default 2000). */
  maxSteps?: number;
  /** Coordinator instant events kept (default 1000). */
  maxInstants?: number;
}

/** The latest steps of every rank and the latest instants, as a trace that is always valid JSON. */
export class TimelineBuffer {
  private readonly builder = new TraceBuilder();
  private readonly meta: TraceEvent[];
  private instants: TraceEvent[] = [];
  private readonly steps = new Map<number, TraceEvent[][]>();
  readonly maxSteps: number;
  private readonly maxInstants: number;

  constructor(limits: TimelineLimits = {}) {
    this.maxSteps = limits.maxSteps ?? 2000;
    this.maxInstants = limits.maxInstants ?? 1000;
    if (!Number.isInteger(this.maxSteps) || this.maxSteps < 1) {
      throw new ConfigError(`timeline maxSteps must be a positive integer, got ${this.maxSteps}`);
    }
    this.meta = this.builder.start();
  }

  /** Fold in an event; returns the trace events it made (for a streaming writer). */
  add(event: RunEvent, at: number): TraceEvent[] {
    const made = this.builder.events(event, at);
    if (event.kind !== 'steps') {
      this.instants.push(...made);
      if (this.instants.length > 2 * this.maxInstants) this.instants = this.instants.slice(-this.maxInstants);
      return made;
    }
    let ring = this.steps.get(event.rank);
    if (!ring) this.steps.set(event.rank, (ring = []));
    for (const e of made) {
      if (e.ph === 'M') this.meta.push(e);
      else if (e.name === 'step') ring.push([e]);
      else ring[ring.length - 1]?.push(e);
    }
    if (ring.length > 2 * this.maxSteps) ring.splice(0, ring.length - this.maxSteps);
    return made;
  }

  readonly observe: RunObserver = (event, at) => void this.add(event, at);

  /** Steps held for `rank` (for the writer's switch to rewriting). */
  stepCount(rank: number): number {
    return this.steps.get(rank)?.length ?? 0;
  }

  events(): TraceEvent[] {
    const out = [...this.meta, ...this.instants.slice(-this.maxInstants)];
    for (const ring of this.steps.values()) for (const step of ring.slice(-this.maxSteps)) out.push(...step);
    return out;
  }

  json(): string {
    return `[\n${this.events()
      .map((e) => JSON.stringify(e))
      .join(',\n')}\n]\n`;
  }
}

export interface TimelineWriterOptions extends TimelineLimits {
  /** The buffer to fill (share it with the dashboard's download); a new one by default. */
  buffer?: TimelineBuffer;
  /** How often a file past its budget is rewritten from the buffer, ms (default 30000). */
  rewriteMs?: number;
}

/** Past its budget, the file is complete at all times: the buffer's latest steps, rewritten as a whole. */
class Rewriter {
  private timer?: NodeJS.Timeout;
  active = false;

  constructor(
    private readonly file: string,
    private readonly buffer: TimelineBuffer,
    private readonly streamEnded: Promise<void>,
    private readonly everyMs: number,
    private readonly onError: (err: Error) => void,
  ) {}

  private rewrite(): void {
    try {
      const tmp = `${this.file}.tmp`;
      fs.writeFileSync(tmp, this.buffer.json());
      fs.renameSync(tmp, this.file);
    } catch (err) {
      this.onError(err as Error);
    }
  }

  start(): void {
    this.active = true;
    this.timer = setInterval(() => this.rewrite(), this.everyMs);
    this.timer.unref();
    void this.streamEnded.then(() => this.rewrite());
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.streamEnded;
    this.rewrite();
  }
}

/** Open `file` for writing (creating its folder) and stream the run's trace events into it, bounded. */
export function createTimelineWriter(file: string, opts: TimelineWriterOptions = {}): TimelineWriter {
  let fd: number;
  try {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    fd = fs.openSync(file, 'w');
  } catch (err) {
    throw new ConfigError(`cannot write the timeline file '${file}': ${(err as Error).message}`, { cause: err });
  }
  const stream = fs.createWriteStream(file, { fd });
  let failure: Error | undefined;
  stream.on('error', (err) => {
    failure ??= err;
  });
  const buffer = opts.buffer ?? new TimelineBuffer(opts);
  let first = true;
  let closing: Promise<void> | undefined;
  const write = (events: TraceEvent[]): void => {
    if (events.length === 0 || failure || closing || rewriter.active) return;
    const text = events.map((e) => JSON.stringify(e)).join(',\n');
    stream.write(first ? text : `,\n${text}`);
    first = false;
  };
  const streamEnded = new Promise<void>((resolve) => stream.once('close', resolve));
  const rewriter = new Rewriter(file, buffer, streamEnded, opts.rewriteMs ?? 30_000, (err) => (failure ??= err));

  stream.write('[\n');
  write(buffer.events());
  return {
    observe: (event, at) => {
      const made = buffer.add(event, at);
      if (rewriter.active) return;
      if (event.kind === 'steps' && buffer.stepCount(event.rank) >= buffer.maxSteps) {
        rewriter.start();
        stream.end();
      } else write(made);
    },
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        const settle = (): void => (failure ? reject(failure) : resolve());
        if (rewriter.active) return void rewriter.stop().then(settle);
        if (stream.destroyed) return settle();
        stream.once('close', settle);
        stream.end('\n]\n');
      });
      return closing;
    },
  };
}
