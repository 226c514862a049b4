/**
 * Step reports that reach the coordinator after their generation was replaced. A rank reports a step once its
 * allreduce has completed, so its last report can cross the next generation's `assign` on the wire. The steps it
 * describes are committed when the next generation starts at or past them (it restores from the most advanced
 * survivor), so they are kept; steps at or past that start (a rollback to a held state) are dropped. Reports are held
 * until the start is known.
 */
import type { MessageOf } from '../shared/wire/protocol.js';

type Report = MessageOf<'metrics'>;

export class LateRecords {
  private readonly placeOf = new Map<string, { gen: number; rank: number }>();
  private held: Report[] = [];
  private startStep?: number;

  /** A new generation replaces `gen`: where each member of `gen` stood in it. */
  replaced(gen: number, members: ReadonlyArray<{ id: string; rank: number }>): void {
    this.placeOf.clear();
    for (const m of members) if (m.rank >= 0) this.placeOf.set(m.id, { gen, rank: m.rank });
    this.held = [];
    this.startStep = undefined;
  }

  /** Whether `report` is one of `workerId`'s from its place in the replaced generation. */
  isLate(workerId: string, report: Report): boolean {
    const place = this.placeOf.get(workerId);
    return place !== undefined && place.gen === report.gen && place.rank === report.rank;
  }

  /** Hold a late report; returns what can be kept now (nothing while the new generation's start is unknown). */
  take(report: Report): Report[] {
    this.held.push(report);
    return this.startStep === undefined ? [] : this.release(this.startStep);
  }

  /** The new generation starts at `step`: the held reports, cut to the steps before it. */
  started(step: number): Report[] {
    this.startStep = step;
    return this.release(step);
  }

  private release(step: number): Report[] {
    const kept = this.held
      .map((r) => ({ ...r, records: r.records.filter((s) => s.step < step) }))
      .filter((r) => r.records.length > 0);
    this.held = [];
    return kept;
  }
}
