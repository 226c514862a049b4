/**
 * Run folders written before events.jsonl existed (or by a coordinator that does not write it): their run events,
 * rebuilt from what the folder does hold, best effort:
 *
 *   coordinator.log.jsonl   pino lines: 'coordinator listening' (run id, min workers), 'worker joined',
 *                           'ring formed', 'shards sent' (an epoch starts), 'epoch finished', 'run ended',
 *                           'worker link closed', and every warning or error (as notices)
 *   metrics.jsonl           every step record of every rank ({rank, gen, ...record})
 *   summary.json            the model and the final summary, when the run wrote one there
 *
 * Both files are merged in time order (a record counts at its end: startedAt plus its phases). Ranks are given in
 * joining order, as the coordinator assigns them. What the files do not say stays unknown: the model name without
 * a summary.json, a worker's host before its ring.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { StepRecord } from '../../shared/wire/protocol.js';
import type { RunEvent, RunObserver, RunSummaryView, WorkerView } from '../events.js';
import type { EpochOutcome } from '../run-state.js';

export const LEGACY_FILES = { log: 'coordinator.log.jsonl', metrics: 'metrics.jsonl', summary: 'summary.json' };

type Line = Record<string, unknown>;
interface Timed {
  at: number;
  event: RunEvent;
}

function jsonLines(file: string): Line[] {
  if (!fs.existsSync(file)) return [];
  const out: Line[] = [];
  for (const text of fs.readFileSync(file, 'utf8').split('\n')) {
    try {
      const v = JSON.parse(text) as unknown;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) out.push(v as Line);
    } catch {
      // not a JSON line: skipped
    }
  }
  return out;
}

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);
const str = (v: unknown, d = ''): string => (typeof v === 'string' ? v : d);

export function isLegacyRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, LEGACY_FILES.metrics)) || fs.existsSync(path.join(dir, LEGACY_FILES.log));
}

function readSummary(dir: string): Partial<RunSummaryView> & { model?: string } {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, LEGACY_FILES.summary), 'utf8')) as RunSummaryView;
  } catch {
    return {};
  }
}

/** The step records as 'steps' events at their end times. */
function stepEvents(lines: Line[]): Timed[] {
  const out: Timed[] = [];
  for (const l of lines) {
    if (typeof l.step !== 'number' || typeof l.rank !== 'number') continue;
    const { rank, gen, ...rest } = l;
    const r = { ...rest, loss: rest.loss === null ? NaN : num(rest.loss, NaN) } as unknown as StepRecord;
    const at = num(r.startedAt) + num(r.dataMs) + num(r.computeMs) + num(r.allreduceMs) + num(r.applyMs);
    out.push({ at, event: { kind: 'steps', gen: num(gen, 1), rank: rank as number, records: [r] } });
  }
  return out;
}

/** Folds the coordinator's log lines into events, keeping who is connected to give ring ranks. */
class LogReplay {
  private readonly alive: WorkerView[] = [];
  private epochsDone: EpochOutcome[] = [];
  private ended = false;
  private worldSize = 0;

  constructor(
    private readonly epochs: number,
    private readonly model: string,
    private readonly samplesPerEpoch: Map<number, number>,
    private readonly lastStep: number,
    private readonly batchSize: number,
  ) {}

  event(l: Line): RunEvent | undefined {
    switch (l.msg) {
      case 'coordinator listening':
        return {
          kind: 'runStarted',
          runId: str(l.runId, 'unknown'),
          model: this.model,
          epochs: this.epochs,
          minWorkers: num(l.minWorkers, 1),
          batchSize: this.batchSize,
        };
      case 'worker joined': {
        const w: WorkerView = {
          id: str(l.workerId),
          rank: -1,
          host: str(l.host, 'unknown'),
          backend: str(l.backend, 'unknown'),
          state: 'joined',
        };
        this.alive.push(w);
        return { kind: 'workerJoined', worker: w };
      }
      case 'ring formed':
        this.worldSize = this.alive.length;
        this.alive.forEach((w, rank) => (w.rank = rank));
        return { kind: 'ringFormed', gen: num(l.gen, 1), workers: this.alive.map((w) => ({ ...w })) };
      case 'shards sent':
        return {
          kind: 'epochStarted',
          epoch: num(l.epoch),
          epochs: this.epochs,
          samples: this.samplesPerEpoch.get(num(l.epoch)) ?? 0,
        };
      case 'epoch finished': {
        const { epoch, testAccuracy, testLoss, trainLoss, trainSeconds, samples } = l;
        const o = {
          epoch: num(epoch),
          testAccuracy: num(testAccuracy),
          testLoss: num(testLoss),
          trainLoss: num(trainLoss),
          trainSeconds: num(trainSeconds),
          samples: num(samples),
        };
        this.epochsDone.push(o);
        return { kind: 'epochFinished', outcome: o };
      }
      case 'run ended':
        this.ended = true;
        return { kind: 'runEnded', summary: this.summary(l) };
      case 'worker link closed':
        return this.left(l);
    }
    if (num(l.level) >= 40)
      return { kind: 'notice', level: num(l.level) >= 50 ? 'error' : 'warn', message: str(l.msg) };
    return undefined;
  }

  private left(l: Line): RunEvent | undefined {
    const i = this.alive.findIndex((w) => w.id === l.workerId);
    if (i < 0) return undefined;
    const [w] = this.alive.splice(i, 1);
    return {
      kind: 'workerLeft',
      worker: { ...w!, state: this.ended ? 'stopped' : 'lost' },
      reason: `close code ${num(l.code)}`,
    };
  }

  private summary(l: Line): RunSummaryView {
    const outcome =
      str(l.outcome) === 'finished' ? 'finished' : str(l.outcome) === 'interrupted' ? 'interrupted' : 'failed';
    const seconds = this.epochsDone.reduce((s, h) => s + h.trainSeconds, 0);
    const samples = this.epochsDone.reduce((s, h) => s + h.samples, 0);
    return {
      outcome,
      epochs: this.epochsDone.length,
      steps: this.lastStep + 1,
      testAccuracy: num(l.testAccuracy),
      samplesPerSec: seconds > 0 ? samples / seconds : 0,
      wallSeconds: num(l.wallSeconds),
      workers: this.worldSize,
      ...(outcome === 'finished' ? {} : { error: str(l.reason, 'unknown') }),
    };
  }
}

/** Replay a legacy run folder into `observe`; returns how many events it gave. */
export function replayLegacyRun(dir: string, observe: RunObserver): number {
  const steps = stepEvents(jsonLines(path.join(dir, LEGACY_FILES.metrics)));
  const log = jsonLines(path.join(dir, LEGACY_FILES.log));
  const perEpoch = new Map<number, number>();
  let lastStep = -1;
  for (const s of steps) {
    for (const r of (s.event as Extract<RunEvent, { kind: 'steps' }>).records) {
      perEpoch.set(r.epoch, (perEpoch.get(r.epoch) ?? 0) + r.samples);
      lastStep = Math.max(lastStep, r.step);
    }
  }
  const epochs = Math.max(perEpoch.size, ...log.filter((l) => l.msg === 'epoch finished').map((l) => num(l.epoch)));
  const batch = (steps[0]?.event as Extract<RunEvent, { kind: 'steps' }> | undefined)?.records[0]?.samples ?? 0;
  const replay = new LogReplay(epochs, str(readSummary(dir).model, 'unknown'), perEpoch, lastStep, batch);
  const timed: Timed[] = [];
  for (const l of log) {
    const event = replay.event(l);
    if (event) timed.push({ at: num(l.time), event });
  }
  // Stable: log order within the log, steps after the log line of the same millisecond.
  const all = [...timed, ...steps].sort((a, b) => a.at - b.at);
  for (const t of all) observe(t.event, t.at);
  return all.length;
}
