/**
 * Where a new membership's replica state comes from, as a pure decision. Nothing committed may be trained twice and
 * nothing may silently start over:
 *   1. the most advanced member whose state belongs to the run's current lineage (it holds every step it applied);
 *   2. otherwise the state the coordinator holds: the --resume checkpoint, or the last state it committed (every
 *      sync, every checkpoint, every epoch end), for instance after every worker was lost;
 *   3. otherwise (a fresh run) rank 0's initial weights.
 *
 * A lineage is an id the coordinator draws whenever the run's history branches (a fresh start, a restore from a
 * checkpoint or a committed state) and stores in every checkpoint. A member's state descends from the checkpoint,
 * and may be adopted, only when its lineage is the checkpoint's and it is at least as far.
 */
import type { Position } from './epoch-plan.js';

export interface MemberState {
  rank: number;
  hasState: boolean;
  lineage: string;
  position: Position;
}

export interface HeldState {
  position: Position;
  lineage: string;
  /** Where it came from, for the log. */
  origin: 'checkpoint' | 'committed';
}

export type RestoreSource =
  | { kind: 'member'; rank: number; position: Position }
  | { kind: 'held'; state: HeldState }
  | { kind: 'initial'; rank: number };

export function chooseRestore(
  members: readonly MemberState[],
  held: HeldState | undefined,
  lineage: string,
): RestoreSource {
  const adoptable = members.filter(
    (m) => m.hasState && m.lineage === lineage && (!held || m.position.step >= held.position.step),
  );
  if (adoptable.length > 0) {
    const best = adoptable.reduce((a, b) => (b.position.step > a.position.step ? b : a));
    return { kind: 'member', rank: best.rank, position: best.position };
  }
  if (held) return { kind: 'held', state: held };
  return { kind: 'initial', rank: members[0]?.rank ?? 0 };
}
