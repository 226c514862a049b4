/**
 * The coordinator's bookkeeping of a run, free of I/O so it can be tested alone: per-epoch completion and evaluation
 * sums, per-phase timing means, replica hash comparison, and the final summary.
 */
import type { EpochDoneMessage, EvalResultMessage, StepRecord } from '../shared/wire/protocol.js';
import { WaitTracker, type WorkerWait } from './dashboard/waits.js';

/** The summary's "who made the others wait", per rank (see dashboard/waits.ts). */
export interface WaitSummary {
  waits: WorkerWait[];
}

export interface EpochOutcome {
  epoch: number;
  testAccuracy: number;
  testLoss: number;
  trainLoss: number;
  /** Wall seconds of the slowest worker's training part of the epoch (evaluation excluded). */
  trainSeconds: number;
  samples: number;
}

export interface PhaseMeans {
  dataMs: number;
  computeMs: number;
  allreduceMs: number;
  applyMs: number;
}

interface EpochProgress {
  /** Training seconds of this epoch under earlier generations (a membership change splits an epoch). */
  priorSeconds: number;
  done: Map<number, EpochDoneMessage>;
  evals: Map<number, EvalResultMessage>;
  lossSum: number;
  lossCount: number;
  samples: number;
}

export class RunState {
  readonly history: EpochOutcome[] = [];
  private readonly epochs = new Map<number, EpochProgress>();
  private readonly phaseSums: PhaseMeans = { dataMs: 0, computeMs: 0, allreduceMs: 0, applyMs: 0 };
  private recordCount = 0;
  private readonly hashes = new Map<number, Map<number, string>>();
  hashChecks = 0;
  hashMismatches = 0;
  totalSamples = 0;
  lastStep = -1;
  latestLoss = NaN;
  /** Who entered each step's allreduce last; rings are numbered here in the order they form. */
  readonly waits = new WaitTracker({ recent: 0 });
  private rings = 0;

  constructor(private worldSize: number) {}

  nonFiniteSteps = 0;

  /**
   * A new membership: hashes and completion reports of the old one can never complete, so drop them; the training
   * time the old generation spent on an unfinished epoch is kept.
   */
  newGeneration(worldSize: number, lastStepDone: number): void {
    this.worldSize = worldSize;
    this.waits.ring(++this.rings, worldSize);
    this.hashes.clear();
    for (const p of this.epochs.values()) {
      p.priorSeconds += Math.max(0, ...[...p.done.values()].map((d) => d.trainMs / 1000));
      p.done.clear();
      p.evals.clear();
    }
    this.lastStep = lastStepDone - 1;
  }

  restoreHistory(history: EpochOutcome[], totalSamples: number): void {
    this.history.push(...history);
    this.totalSamples = totalSamples;
  }

  private progress(epoch: number): EpochProgress {
    let p = this.epochs.get(epoch);
    if (!p) {
      p = { priorSeconds: 0, done: new Map(), evals: new Map(), lossSum: 0, lossCount: 0, samples: 0 };
      this.epochs.set(epoch, p);
    }
    return p;
  }

  /**
   * Fold in one worker's step records; returns the steps whose replica hashes disagreed. `late` records belong to a
   * replaced generation: they count, but its ring and hash checks are over.
   */
  addRecords(rank: number, records: readonly StepRecord[], { late = false } = {}): number[] {
    const mismatched: number[] = [];
    for (const r of records) {
      const p = this.progress(r.epoch);
      p.lossSum += r.loss;
      p.lossCount++;
      p.samples += r.samples;
      this.totalSamples += r.samples;
      this.phaseSums.dataMs += r.dataMs;
      this.phaseSums.computeMs += r.computeMs;
      this.phaseSums.allreduceMs += r.allreduceMs;
      this.phaseSums.applyMs += r.applyMs;
      this.recordCount++;
      this.lastStep = Math.max(this.lastStep, r.step);
      this.latestLoss = r.loss;
      if (r.nonFinite) this.nonFiniteSteps++;
      if (late) continue;
      this.waits.add(this.rings, rank, r);
      if (r.paramHash !== undefined && this.checkHash(r.step, rank, r.paramHash) === false) mismatched.push(r.step);
    }
    return mismatched;
  }

  /** Compare once every rank reported a hash for `step`: undefined while waiting, else whether all agreed. */
  private checkHash(step: number, rank: number, hash: string): boolean | undefined {
    let byRank = this.hashes.get(step);
    if (!byRank) {
      byRank = new Map();
      this.hashes.set(step, byRank);
    }
    byRank.set(rank, hash);
    if (byRank.size < this.worldSize) return undefined;
    this.hashes.delete(step);
    this.hashChecks++;
    const agreed = new Set(byRank.values()).size === 1;
    if (!agreed) this.hashMismatches++;
    return agreed;
  }

  addEval(msg: EvalResultMessage): void {
    this.progress(msg.epoch).evals.set(msg.rank, msg);
  }

  addEpochDone(msg: EpochDoneMessage): void {
    this.progress(msg.epoch).done.set(msg.rank, msg);
  }

  /** Every rank finished the epoch and reported its evaluation. */
  epochComplete(epoch: number): boolean {
    const p = this.epochs.get(epoch);
    return !!p && p.done.size >= this.worldSize && p.evals.size >= this.worldSize;
  }

  /** Close the epoch: sum the sharded evaluation counts. */
  finishEpoch(epoch: number): EpochOutcome {
    const p = this.progress(epoch);
    let correct = 0;
    let total = 0;
    let lossSum = 0;
    for (const e of p.evals.values()) {
      correct += e.correct;
      total += e.total;
      lossSum += e.lossSum;
    }
    const trainSeconds = p.priorSeconds + Math.max(0, ...[...p.done.values()].map((d) => d.trainMs / 1000));
    const outcome: EpochOutcome = {
      epoch: epoch + 1,
      testAccuracy: correct / Math.max(1, total),
      testLoss: lossSum / Math.max(1, total),
      trainLoss: p.lossSum / Math.max(1, p.lossCount),
      trainSeconds,
      samples: p.samples,
    };
    this.history.push(outcome);
    this.epochs.delete(epoch);
    return outcome;
  }

  phaseMeans(): PhaseMeans {
    const n = Math.max(1, this.recordCount);
    return {
      dataMs: this.phaseSums.dataMs / n,
      computeMs: this.phaseSums.computeMs / n,
      allreduceMs: this.phaseSums.allreduceMs / n,
      applyMs: this.phaseSums.applyMs / n,
    };
  }

  /** Samples per second of training time, summed over the cluster (evaluation excluded). */
  samplesPerSec(): number {
    const seconds = this.history.reduce((s, h) => s + h.trainSeconds, 0);
    const samples = this.history.reduce((s, h) => s + h.samples, 0);
    return seconds > 0 ? samples / seconds : 0;
  }
}
