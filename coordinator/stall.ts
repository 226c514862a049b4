/**
 * Stall inspection (Horovod's stall_inspector, for a ring): each rank that waits too long on its ring predecessor
 * reports `stall { step, waitingMs, peerRank }`. A report holds until the rank makes progress again (its heartbeat
 * step passes the reported step) or the membership changes.
 *
 * Who holds the ring up is found by following the waits backwards: rank r waits on its predecessor p; if p is stalled
 * too it waits on its own predecessor, and so on, until a rank that is not waiting. That rank is the culprit, whatever
 * steps the waiting ranks are at (ranks of one ring may be a step apart, so reports are never grouped by step). When
 * the walk comes back around, every rank is waiting on another: nobody can be blamed, the ring itself is stuck.
 */

export interface StallReport {
  step: number;
  waitingMs: number;
  peerRank: number;
}

export type StallVerdict =
  | { kind: 'none' }
  /** `rank` is the one every waiting rank ultimately waits on. */
  | { kind: 'culprit'; rank: number; waitingMs: number; step: number }
  /** Every rank waits on another: a stuck ring (a lost frame, a half-open link), not a slow worker. */
  | { kind: 'allStalled'; waitingMs: number };

export class StallInspector {
  private readonly reports = new Map<number, StallReport>();

  reset(): void {
    this.reports.clear();
  }

  report(rank: number, r: StallReport): void {
    this.reports.set(rank, r);
  }

  /** A rank's heartbeat: it has applied `stepsDone` steps, so a stall at an earlier step is over. */
  heard(rank: number, stepsDone: number): void {
    const r = this.reports.get(rank);
    if (r && stepsDone > r.step) this.reports.delete(rank);
  }

  /**
   * The verdict for a ring of `worldSize` ranks once some rank has waited at least `abortMs`: the rank it waits on,
   * followed back through every rank that is itself waiting.
   */
  verdict(worldSize: number, abortMs: number): StallVerdict {
    const over = [...this.reports.entries()].filter(([rank, r]) => rank < worldSize && r.waitingMs >= abortMs);
    if (abortMs <= 0 || over.length === 0) return { kind: 'none' };
    const [start, first] = over.reduce((a, b) => (b[1].waitingMs > a[1].waitingMs ? b : a));
    const seen = new Set<number>([start]);
    let waitsOn = first.peerRank;
    for (;;) {
      if (waitsOn < 0 || waitsOn >= worldSize) return { kind: 'none' };
      const next = this.reports.get(waitsOn);
      if (!next) return { kind: 'culprit', rank: waitsOn, waitingMs: first.waitingMs, step: first.step };
      if (seen.has(waitsOn)) return { kind: 'allStalled', waitingMs: first.waitingMs };
      seen.add(waitsOn);
      waitsOn = next.peerRank;
    }
  }
}
