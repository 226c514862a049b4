/**
 * The JSON shapes of /api/status and the page's live updates, shared by the dashboard state, the server, the run
 * reader and the report.
 */
import type { RunEvent, RunSummaryView, WorkerState } from '../events.js';
import type { EpochOutcome } from '../run-state.js';
import type { SeriesCursor, SeriesDelta } from './series.js';
import type { WaitView } from './waits.js';

/**
 * idle (no run yet) -> waiting (for --min-workers) -> starting (first ring) -> training <-> evaluating, and
 * recovering (a ring re-formed mid-run, until training resumes) or back to waiting when too few workers remain;
 * finally finished | failed | interrupted.
 */
export type RunPhase =
  'idle' | 'waiting' | 'starting' | 'training' | 'evaluating' | 'recovering' | 'finished' | 'failed' | 'interrupted';

/** Moving averages of one worker's step phases, in milliseconds. */
interface PhaseTimings {
  data: number;
  compute: number;
  /** Includes the time spent waiting for the slowest ring peer. */
  allreduce: number;
  reduceScatter: number;
  allgather: number;
  apply: number;
  step: number;
}

export interface WorkerStatus {
  id: string;
  rank: number;
  host: string;
  backend: string;
  state: WorkerState;
  samplesPerSec: number;
  timingsMs: PhaseTimings | null;
  /** Step records received from this worker. */
  steps: number;
  lastStep: number;
  lastLoss: number | null;
  /** Unix ms of this worker's last event (join, step report, leave). */
  lastSeen: number;
  straggler: boolean;
}

export interface LogEntry {
  seq: number;
  at: number;
  level: 'info' | 'warn' | 'error';
  kind: RunEvent['kind'];
  message: string;
  fields?: Record<string, unknown>;
}

export interface EpochProgressView {
  /** 1-based epoch in progress (0 before the first). */
  epoch: number;
  epochs: number;
  samplesDone: number;
  samplesTotal: number;
  fraction: number;
  /** Seconds left in this epoch's training at the current rate (evaluation excluded); null while unknown. */
  etaSeconds: number | null;
  /** Seconds left in the run's training at the current rate; null while unknown. */
  runEtaSeconds: number | null;
}

export interface StatusView {
  /** Unix ms when the view was made, so readers can tell how long ago `lastSeen` was. */
  now: number;
  run: {
    id: string | null;
    model: string | null;
    epochs: number;
    minWorkers: number;
    batchSize: number;
    phase: RunPhase;
    startedAt: number | null;
    endedAt: number | null;
  };
  generation: number;
  /** Same as progress.epoch. */
  epoch: number;
  /** Latest global step reported (-1 before the first). */
  step: number;
  worldSize: number;
  progress: EpochProgressView;
  workers: WorkerStatus[];
  latest: {
    loss: number | null;
    trainLoss: number | null;
    testAccuracy: number | null;
    testLoss: number | null;
    samplesPerSec: number;
    samples: number;
    workersAlive: number;
    failures: number;
    recoveries: number;
  };
  history: EpochOutcome[];
  /** Who made the others wait in the allreduce (see waits.ts). */
  waits: WaitView;
  summary: RunSummaryView | null;
}

export interface SeriesSet<T> {
  loss: T;
  accuracy: T;
  throughput: T;
}

/** /api/status and the first SSE message: the status plus every series point and the event log. */
export interface DashboardSnapshot extends StatusView {
  series: SeriesSet<SeriesDelta>;
  events: LogEntry[];
}

export interface DashboardCursor {
  series: SeriesSet<SeriesCursor>;
  eventSeq: number;
}

/** What changed since a cursor: the whole (small) status, new series points and new log entries. */
export interface DashboardUpdate extends DashboardSnapshot {
  cursor: DashboardCursor;
}

export interface DashboardStateOptions {
  /** Points kept per chart before compacting (default 5000). */
  seriesCap?: number;
  /** Event log entries kept (default 500). */
  eventLogSize?: number;
  /** A worker whose compute time exceeds this multiple of the median is a straggler (default 1.5). */
  stragglerRatio?: number;
  /** Weight of the newest step in the moving averages (default 0.2). */
  smoothing?: number;
  /** At most one throughput point per this many ms (default 1000). */
  throughputIntervalMs?: number;
  /** Departed workers kept in the table (default 32). */
  departedKept?: number;
  /** Clock for `now` (default Date.now). */
  now?: () => number;
}
