/**
 * The chaos command: its checks catch what they must (rolled-back or skipped steps, differing replica hashes, a
 * process that died unscheduled, a run that did not finish), and a short chaos run on a real cluster (SIGKILL,
 * SIGSTOP/SIGCONT, joins, ring links cut, hostile clients, the coordinator SIGKILLed and restarted with --resume)
 * ends with 0 failed checks.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runChaos } from '../bench/chaos/chaos.js';
import {
  checkFinished,
  checkHashes,
  checkNoGaps,
  checkNoStepTwice,
  checkProcesses,
  type StepLine,
} from '../bench/chaos/checks.js';
import { tempDir } from './helpers/procs.js';

/** Steps [from, to] recorded by every rank of a generation. */
function gen(g: number, ranks: number, from: number, to: number, incarnation = 0): StepLine[] {
  const lines: StepLine[] = [];
  for (let step = from; step <= to; step++)
    for (let rank = 0; rank < ranks; rank++) lines.push({ rank, gen: g, step, incarnation });
  return lines;
}

describe('chaos checks', () => {
  test('a re-formed ring that goes on from the most advanced survivor passes; a rollback fails', () => {
    const good = [...gen(1, 3, 0, 9), ...gen(2, 2, 10, 20)];
    assert.ok(checkNoStepTwice(good).ok);
    // The last records of a generation fenced off, the survivor one step ahead: no rollback, no gap.
    const fenced = [...gen(1, 3, 0, 8), ...gen(2, 2, 10, 20)];
    assert.ok(checkNoStepTwice(fenced).ok);
    assert.ok(checkNoGaps(fenced, { steps: 21 }).ok);
    // A restarted coordinator that resumed from an older checkpoint: steps 5..9 trained twice.
    const rolledBack = [...gen(1, 2, 0, 9), ...gen(1, 2, 5, 20, 1)];
    const r = checkNoStepTwice(rolledBack);
    assert.equal(r.ok, false);
    assert.match(r.detail, /step 5 committed in 0\/1, trained again in 1\/1/);
    // A step reported twice by one rank within a generation.
    assert.equal(checkNoStepTwice([...gen(1, 2, 0, 3), ...gen(1, 2, 3, 3)]).ok, false);
  });

  test('a step skipped within a generation, or a summary that disagrees with the records, fails', () => {
    assert.equal(checkNoGaps([...gen(1, 2, 0, 3), ...gen(1, 2, 5, 9)], { steps: 10 }).ok, false);
    assert.equal(checkNoGaps(gen(1, 2, 0, 9), { steps: 12 }).ok, false);
    assert.ok(checkNoGaps(gen(1, 2, 0, 9), { steps: 10 }).ok);
    assert.equal(checkNoGaps([], undefined).ok, false);
  });

  test('replica hashes: equal passes; different, reported mismatches, or no check at all fail', () => {
    const hashed = (h1: string, h2: string): StepLine[] => [
      { rank: 0, gen: 1, step: 10, paramHash: h1, incarnation: 0 },
      { rank: 1, gen: 1, step: 10, paramHash: h2, incarnation: 0 },
    ];
    assert.ok(checkHashes(hashed('ab', 'ab'), { hashMismatches: 0 }).ok);
    assert.equal(checkHashes(hashed('ab', 'cd'), { hashMismatches: 0 }).ok, false);
    assert.equal(checkHashes(hashed('ab', 'ab'), { hashMismatches: 1 }).ok, false);
    assert.equal(checkHashes(gen(1, 2, 0, 3), {}).ok, false);
  });

  test('processes: only the ones the schedule killed may end badly; the run must finish at its accuracy', () => {
    const ends = [
      { name: 'worker-0', killedBySchedule: true, code: null, signal: 'SIGKILL' },
      { name: 'worker-1', killedBySchedule: false, code: 0, signal: null },
    ];
    assert.ok(checkProcesses(ends).ok);
    assert.equal(
      checkProcesses([...ends, { name: 'worker-2', killedBySchedule: false, code: 1, signal: null }]).ok,
      false,
    );
    const late = { name: 'worker-3', killedBySchedule: false, tooLate: true, code: null, signal: 'SIGKILL' };
    assert.ok(checkProcesses([...ends, late]).ok, 'a worker started after the end, which never joined');
    assert.equal(checkProcesses([...ends, { ...late, tooLate: false }]).ok, false);
    assert.ok(checkFinished({ outcome: 'finished', testAccuracy: 0.9 }, 0.85).ok);
    assert.equal(checkFinished({ outcome: 'finished', testAccuracy: 0.8 }, 0.85).ok, false);
    assert.equal(checkFinished({ outcome: 'failed', testAccuracy: 0.9 }, 0.85).ok, false);
    assert.equal(checkFinished(undefined, 0.85).ok, false);
  });
});

test('a short chaos run on a real cluster ends with 0 failed checks', { timeout: 420_000 }, async () => {
  const lines: string[] = [];
  const summary = await runChaos({
    seed: 7,
    minutes: 1,
    faults: ['kill', 'stop', 'join', 'cut', 'hostile', 'coordinator'],
    workers: 3,
    maxWorkers: 4,
    epochs: 3,
    trainLimit: 1000,
    testLimit: 300,
    targetAccuracy: 0.7,
    recoveryTimeoutMs: 120_000,
    finishTimeoutMs: 240_000,
    dir: await tempDir('chaos'),
    log: (line) => lines.push(line),
  });
  const report = `${lines.join('\n')}\n${summary.checks.map((c) => `${c.ok ? 'ok' : 'FAIL'} ${c.name}: ${c.detail}`).join('\n')}`;
  assert.ok(summary.faults.length > 0, report);
  assert.equal(summary.failedChecks, 0, report);
});
