/**
 * Who made the others wait. Pure: fed the step records of every rank, it says for each global step which rank
 * entered the ring allreduce last and by how much, and per rank its share of everyone's waiting.
 *
 * Clock-free: the ranks' wall clocks are never compared. Every rank leaves an allreduce at about the same moment
 * (the last chunk reaches everyone within a hop), and a rank's `allreduceMs` runs from its own entry to that moment.
 * So the rank with the shortest allreduce entered last, and any other rank's excess over that shortest one is the
 * time it sat in the allreduce waiting: wait_i = allreduceMs_i - min_j allreduceMs_j. (A real run's step records
 * agree with the clock-based reading: the difference of the ranks' data + compute times before the allreduce.)
 *
 * All of a step's waiting is put on the rank that entered last: the ring could not start before it, however late the
 * others were. `lateMs`, by how much it was last, is its lead over the second-to-last rank; summed over steps, that
 * is the time the ring waited for it alone ("held the ring"), given as a fraction of the steps' wall time.
 */
import type { StepRecord } from '../../shared/wire/protocol.js';
import type { RunObserver } from '../events.js';

export interface StepWait {
  gen: number;
  step: number;
  /** The rank that entered the allreduce last. */
  lastRank: number;
  /** How much later than the second-to-last rank it entered, ms. */
  lateMs: number;
  /** Everyone's waiting in this step's allreduce, summed over the ranks, ms. */
  waitMs: number;
  /** Wall time of the step (the longest rank's data + compute + allreduce + apply), ms. */
  stepMs: number;
}

export interface WorkerWait {
  rank: number;
  /** Steps in which this rank entered the allreduce last. */
  lastSteps: number;
  /** Everyone's waiting in those steps, ms. */
  causedMs: number;
  /** causedMs over everyone's waiting in the run (0..1): "rank 1 caused 40% of the waiting". */
  share: number;
  /** Time the ring waited for this rank alone, ms. */
  heldMs: number;
  /** heldMs over the steps' wall time (0..1): "rank 1 held the ring 12% of the time". */
  heldFraction: number;
}

export interface WaitView {
  /** Steps with a record from every rank of their ring (rings of two or more). */
  steps: number;
  totalWaitMs: number;
  totalStepMs: number;
  /** By rank; only ranks that took part in a complete step. */
  workers: WorkerWait[];
  /** The latest steps, newest last. */
  recent: StepWait[];
}

export interface WaitTrackerOptions {
  /** Latest steps kept for `recent` (default 50). */
  recent?: number;
  /** Incomplete steps kept while waiting for the other ranks' reports (default 2048); the oldest are dropped. */
  pendingMax?: number;
}

interface Totals {
  lastSteps: number;
  causedMs: number;
  heldMs: number;
}

/** The step's result once every rank reported it; undefined for a ring of one. */
export function stepWait(gen: number, step: number, records: ReadonlyMap<number, StepRecord>): StepWait | undefined {
  if (records.size < 2) return undefined;
  const entries = [...records].map(([rank, r]) => ({ rank, ar: Math.max(0, r.allreduceMs) }));
  entries.sort((a, b) => a.ar - b.ar || a.rank - b.rank);
  const last = entries[0]!;
  let waitMs = 0;
  for (const e of entries) waitMs += e.ar - last.ar;
  let stepMs = 0;
  for (const r of records.values()) {
    stepMs = Math.max(
      stepMs,
      Math.max(0, r.dataMs) + Math.max(0, r.computeMs) + Math.max(0, r.allreduceMs) + r.applyMs,
    );
  }
  return { gen, step, lastRank: last.rank, lateMs: entries[1]!.ar - last.ar, waitMs, stepMs };
}

export class WaitTracker {
  private readonly recentMax: number;
  private readonly pendingMax: number;
  private readonly worldSizes = new Map<number, number>();
  private readonly pending = new Map<string, Map<number, StepRecord>>();
  private readonly totals = new Map<number, Totals>();
  private recentSteps: StepWait[] = [];
  private steps = 0;
  private totalWaitMs = 0;
  private totalStepMs = 0;

  constructor(opts: WaitTrackerOptions = {}) {
    this.recentMax = opts.recent ?? 50;
    this.pendingMax = opts.pendingMax ?? 2048;
  }

  /** A ring of `worldSize` ranks formed as generation `gen`; steps of older rings can no longer complete. */
  ring(gen: number, worldSize: number): void {
    this.worldSizes.set(gen, worldSize);
    for (const g of this.worldSizes.keys()) if (g < gen) this.worldSizes.delete(g);
    for (const key of this.pending.keys()) if (Number(key.split(':')[0]) < gen) this.pending.delete(key);
  }

  /** One rank's record; returns the step's result when it completes the step. */
  add(gen: number, rank: number, record: StepRecord): StepWait | undefined {
    const worldSize = this.worldSizes.get(gen);
    if (worldSize === undefined || worldSize < 2) return undefined;
    const key = `${gen}:${record.step}`;
    let byRank = this.pending.get(key);
    if (!byRank) {
      byRank = new Map();
      this.pending.set(key, byRank);
      if (this.pending.size > this.pendingMax) this.pending.delete(this.pending.keys().next().value!);
    }
    byRank.set(rank, record);
    if (byRank.size < worldSize) return undefined;
    this.pending.delete(key);
    const result = stepWait(gen, record.step, byRank)!;
    this.fold(result, byRank.keys());
    return result;
  }

  private fold(w: StepWait, ranks: Iterable<number>): void {
    for (const r of ranks) if (!this.totals.has(r)) this.totals.set(r, { lastSteps: 0, causedMs: 0, heldMs: 0 });
    const t = this.totals.get(w.lastRank)!;
    t.lastSteps++;
    t.causedMs += w.waitMs;
    t.heldMs += w.lateMs;
    this.steps++;
    this.totalWaitMs += w.waitMs;
    this.totalStepMs += w.stepMs;
    this.recentSteps.push(w);
    if (this.recentSteps.length > 2 * this.recentMax) this.recentSteps = this.recentSteps.slice(-this.recentMax);
  }

  /** Follow a run's events on its own (rings and step reports). */
  readonly observe: RunObserver = (event) => {
    if (event.kind === 'ringFormed') this.ring(event.gen, event.workers.length);
    else if (event.kind === 'steps') for (const r of event.records) this.add(event.gen, event.rank, r);
  };

  /** Per rank, by rank. */
  workers(): WorkerWait[] {
    // Every rank seen in a complete step, including those never last (their share is 0).
    return [...this.totals.keys()]
      .sort((a, b) => a - b)
      .map((rank): WorkerWait => {
        const t = this.totals.get(rank)!;
        return {
          rank,
          lastSteps: t.lastSteps,
          causedMs: t.causedMs,
          share: this.totalWaitMs > 0 ? t.causedMs / this.totalWaitMs : 0,
          heldMs: t.heldMs,
          heldFraction: this.totalStepMs > 0 ? t.heldMs / this.totalStepMs : 0,
        };
      });
  }

  view(): WaitView {
    return {
      steps: this.steps,
      totalWaitMs: this.totalWaitMs,
      totalStepMs: this.totalStepMs,
      workers: this.workers(),
      recent: this.recentSteps.slice(-this.recentMax).map((s) => ({ ...s })),
    };
  }
}
