/**
 * Which members of a forming ring to evict when its links are not all up in time, as a pure decision. A member that
 * is not ready cannot always be told apart from the neighbour that waits for it: a worker whose ring address cannot
 * be reached leaves its predecessor (whose dial fails) not ready too. So the blame goes, in this order, to the
 * newcomers of this ring that are not ready, then to the members not ready whose predecessor is not ready either (the
 * ones a failed dial was aimed at), then to every member not ready. A result naming every member means the network
 * itself is broken: nobody can be kept.
 */
export interface FormingMember {
  ready: boolean;
  /** First assigned in this generation. */
  newcomer: boolean;
}

/** The ranks (indices into `members`, in ring order) to evict. */
export function blameNotReady(members: readonly FormingMember[]): number[] {
  const n = members.length;
  const ranks = members.map((_, rank) => rank);
  const notReady = ranks.filter((r) => !members[r]!.ready);
  const newcomers = notReady.filter((r) => members[r]!.newcomer);
  const waitedOn = notReady.filter((r) => !members[(r - 1 + n) % n]!.ready);
  return [newcomers, waitedOn, notReady].find((set) => set.length > 0 && set.length < n) ?? notReady;
}
