/**
 * What happens in a run, as a stream of typed events the coordinator emits. The dashboard, the Prometheus metrics and
 * the timeline writer are observers of this stream, so none of them reaches into the coordinator's internals.
 */
import type { StepRecord } from '../shared/wire/protocol.js';
import type { EpochOutcome } from './run-state.js';

export type WorkerState = 'joined' | 'ready' | 'training' | 'lost' | 'stopped';

export interface WorkerView {
  id: string;
  /** -1 until the worker is part of a ring. */
  rank: number;
  host: string;
  backend: string;
  state: WorkerState;
}

/** The end-of-run summary, as written to --summary-json. */
export interface RunSummaryView {
  outcome: 'finished' | 'failed' | 'interrupted';
  epochs: number;
  steps: number;
  testAccuracy: number;
  samplesPerSec: number;
  wallSeconds: number;
  workers: number;
  error?: string;
}

export type RunEvent =
  | { kind: 'runStarted'; runId: string; model: string; epochs: number; minWorkers: number; batchSize: number }
  | { kind: 'workerJoined'; worker: WorkerView }
  | { kind: 'workerLeft'; worker: WorkerView; reason: string }
  | { kind: 'ringFormed'; gen: number; workers: WorkerView[] }
  /**
   * A generation's plan for (the rest of) an epoch: `samples` still to train, after `offset` of the epoch's order;
   * `steps` global steps from `firstStep` on `worldSize` workers.
   */
  | {
      kind: 'epochStarted';
      epoch: number;
      epochs: number;
      samples: number;
      offset?: number;
      firstStep?: number;
      steps?: number;
      worldSize?: number;
    }
  | { kind: 'steps'; gen: number; rank: number; records: StepRecord[] }
  | { kind: 'epochFinished'; outcome: EpochOutcome }
  /** Checkpoints, failures, recoveries, warnings: one line in the event log. */
  | { kind: 'notice'; level: 'info' | 'warn' | 'error'; message: string; fields?: Record<string, unknown> }
  | { kind: 'runEnded'; summary: RunSummaryView };

export type RunObserver = (event: RunEvent, at: number) => void;

/** Fan an event out to every observer; an observer that throws is logged by the caller, never fatal. */
export class RunEvents {
  private readonly observers: RunObserver[] = [];

  add(observer: RunObserver): void {
    this.observers.push(observer);
  }

  emit(event: RunEvent, onError: (err: unknown) => void): void {
    const at = Date.now();
    for (const o of this.observers) {
      try {
        o(event, at);
      } catch (err) {
        onError(err);
      }
    }
  }
}
