/**
 * The chaos run's verdict, computed from the run's own records only (metrics.jsonl, the summary, the process exits):
 * pure functions, so each check is unit-tested on records that break it.
 *
 * Records: metrics.jsonl holds one line per step per rank ({ rank, gen, step, paramHash? }), appended by every
 * coordinator incarnation (a restarted coordinator numbers generations from 1 again, so the chaos driver notes the
 * file's length at each restart: `incarnation` splits the lines).
 *
 * A step is *committed* in a generation once every rank that reported in that generation has reported it (every
 * replica of that membership applied it). A committed step that is trained again later (a later generation or
 * incarnation reports it) was applied twice: the run rolled committed work back.
 */

export interface StepLine {
  rank: number;
  gen: number;
  step: number;
  paramHash?: string;
  /** Which coordinator incarnation wrote the line (0 = the first). */
  incarnation: number;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

export interface RunSummaryLike {
  outcome?: string;
  testAccuracy?: number;
  steps?: number;
  hashMismatches?: number;
}

export interface ProcessEnd {
  name: string;
  killedBySchedule: boolean;
  /** A worker started as the run ended, which never joined it: no coordinator was left to tell it. */
  tooLate?: boolean;
  code: number | null;
  signal: string | null;
}

const key = (l: { incarnation: number; gen: number }) => `${l.incarnation}/${l.gen}`;

/** Group lines by (incarnation, generation), in file order. */
function byGeneration(lines: StepLine[]): Map<string, StepLine[]> {
  const groups = new Map<string, StepLine[]>();
  for (const l of lines) {
    const g = groups.get(key(l)) ?? [];
    g.push(l);
    groups.set(key(l), g);
  }
  return groups;
}

export function checkFinished(summary: RunSummaryLike | undefined, targetAccuracy: number): CheckResult {
  const ok = summary?.outcome === 'finished' && (summary.testAccuracy ?? 0) >= targetAccuracy;
  return {
    name: 'run finished and reached its accuracy',
    ok,
    detail: summary
      ? `outcome ${summary.outcome}, test accuracy ${((summary.testAccuracy ?? 0) * 100).toFixed(2)}% (target ${(targetAccuracy * 100).toFixed(1)}%)`
      : 'no summary written',
  };
}

/** No committed step trained again, and no rank reporting one step twice within a generation. */
export function checkNoStepTwice(lines: StepLine[]): CheckResult {
  const problems: string[] = [];
  const committedAt = new Map<number, string>();
  for (const [gen, group] of byGeneration(lines)) {
    const ranks = new Set(group.map((l) => l.rank));
    const seen = new Map<number, Set<number>>();
    for (const l of group) {
      const first = committedAt.get(l.step);
      if (first !== undefined && first !== gen && problems.length < 10)
        problems.push(`step ${l.step} committed in ${first}, trained again in ${gen} (rank ${l.rank})`);
      const r = seen.get(l.step) ?? new Set<number>();
      if (r.has(l.rank) && problems.length < 10)
        problems.push(`rank ${l.rank} reported step ${l.step} twice in ${gen}`);
      r.add(l.rank);
      seen.set(l.step, r);
    }
    for (const [step, r] of seen) if (r.size === ranks.size && !committedAt.has(step)) committedAt.set(step, gen);
  }
  return {
    name: 'no committed step applied twice',
    ok: problems.length === 0,
    detail: problems.length === 0 ? `${committedAt.size} committed steps, none repeated` : problems.join('; '),
  };
}

/**
 * No step skipped: within each generation the recorded steps are contiguous, and the run's step count matches the
 * last recorded step. (Between generations the records may jump ahead: a generation's last records can arrive after
 * the ring re-formed and are then fenced off, while the replica that applied them is restored from.)
 */
export function checkNoGaps(lines: StepLine[], summary: RunSummaryLike | undefined): CheckResult {
  const problems: string[] = [];
  for (const [gen, group] of byGeneration(lines)) {
    const steps = [...new Set(group.map((l) => l.step))].sort((a, b) => a - b);
    for (let i = 1; i < steps.length; i++)
      if (steps[i]! !== steps[i - 1]! + 1 && problems.length < 10)
        problems.push(`${gen} skipped steps ${steps[i - 1]! + 1}..${steps[i]! - 1}`);
  }
  const last = Math.max(-1, ...lines.map((l) => l.step));
  const total = summary?.steps;
  if (total !== undefined && total !== last + 1)
    problems.push(`the summary counts ${total} steps, the records end at step ${last}`);
  if (last < 0) problems.push('no step recorded');
  return {
    name: 'no step skipped',
    ok: problems.length === 0,
    detail: problems.length === 0 ? `steps 0..${last}, none skipped within a generation` : problems.join('; '),
  };
}

/** Replica hashes equal at every check: within each generation, every rank that hashed a step got the same hash. */
export function checkHashes(lines: StepLine[], summary: RunSummaryLike | undefined): CheckResult {
  const hashes = new Map<string, Set<string>>();
  for (const l of lines) {
    if (!l.paramHash) continue;
    const k = `${key(l)}/${l.step}`;
    const set = hashes.get(k) ?? new Set<string>();
    set.add(l.paramHash);
    hashes.set(k, set);
  }
  const bad = [...hashes].filter(([, set]) => set.size > 1).map(([k]) => k);
  const reported = summary?.hashMismatches ?? 0;
  return {
    name: 'replica hashes equal at every check',
    ok: bad.length === 0 && reported === 0 && hashes.size > 0,
    detail:
      bad.length > 0
        ? `hashes differ at ${bad.slice(0, 10).join(', ')}`
        : reported > 0
          ? `the coordinator reported ${reported} mismatches`
          : `${hashes.size} checks, all equal`,
  };
}

/** No process died except those the schedule killed: every other one exited 0. */
export function checkProcesses(ends: ProcessEnd[]): CheckResult {
  const bad = ends.filter((e) => !e.killedBySchedule && !e.tooLate && e.code !== 0);
  const count = (f: (e: ProcessEnd) => boolean | undefined) => ends.filter(f).length;
  const late = count((e) => e.tooLate);
  return {
    name: 'no process died except those the schedule killed',
    ok: bad.length === 0,
    detail:
      bad.length === 0
        ? `${ends.length} processes, ${count((e) => e.killedBySchedule)} killed by the schedule` +
          (late ? `, ${late} started after the run ended and ended by the driver` : '') +
          ', the rest exited 0'
        : bad.map((e) => `${e.name} ended with ${e.code ?? e.signal}`).join('; '),
  };
}

export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
