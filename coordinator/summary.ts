/** The end-of-run summary (what --summary-json holds), from the run's bookkeeping. */
import type { Position } from './epoch-plan.js';
import type { RunState } from './run-state.js';
import type { ClusterSummary } from './run-types.js';

export interface RunFacts {
  runId: string;
  model: string;
  backends: string[];
  gen: number;
  position: Position;
  workers: number;
  /** performance.now() when the run started. */
  started: number;
}

export function summarize(
  s: RunState,
  run: RunFacts,
  outcome: ClusterSummary['outcome'],
  reason: string,
): ClusterSummary {
  const last = s.history[s.history.length - 1];
  return {
    runId: run.runId,
    model: run.model,
    backend: run.backends.join(',') || 'none',
    epochs: s.history.length,
    steps: Math.max(run.position.step, s.lastStep + 1),
    testAccuracy: last?.testAccuracy ?? 0,
    samplesPerSec: s.samplesPerSec(),
    wallSeconds: (performance.now() - run.started) / 1000,
    workers: run.workers,
    generations: run.gen,
    phaseMeanMs: s.phaseMeans(),
    hashChecks: s.hashChecks,
    hashMismatches: s.hashMismatches,
    nonFiniteSteps: s.nonFiniteSteps,
    history: s.history,
    waits: s.waits.workers(),
    outcome,
    reason,
    ...(outcome === 'finished' ? {} : { error: reason }),
  };
}
