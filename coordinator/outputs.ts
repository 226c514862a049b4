/**
 * The run's outputs as observers of its event stream (pino's "one logger, many destinations"): the JSON log, the
 * terminal progress view, metrics.jsonl and the --summary-json file. Each turns the same events into its own form,
 * so the coordinator states a fact once. None of them can crash or hang the run: a failing file is reported once, as
 * an error with its code, and the observer goes quiet.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ProgressView } from '../shared/cli/progress.js';
import type { Logger } from '../shared/log.js';
import type { RunEvent, RunObserver } from './events.js';

/** One log line per fact; step records are left to metrics.jsonl. */
export function logObserver(log: Logger): RunObserver {
  return (e: RunEvent) => {
    switch (e.kind) {
      case 'runStarted':
        return log.info({ runId: e.runId, model: e.model, epochs: e.epochs, minWorkers: e.minWorkers }, 'run started');
      case 'workerJoined':
        return log.info({ workerId: e.worker.id, host: e.worker.host, backend: e.worker.backend }, 'worker joined');
      case 'workerLeft':
        return log.info({ workerId: e.worker.id, rank: e.worker.rank, reason: e.reason }, 'worker left');
      case 'ringFormed':
        return log.info({ gen: e.gen, worldSize: e.workers.length }, 'ring formed');
      case 'epochStarted':
        return log.info(
          { epoch: e.epoch, offset: e.offset, firstStep: e.firstStep, steps: e.steps, worldSize: e.worldSize },
          'shards sent',
        );
      case 'epochFinished':
        return log.info({ ...e.outcome }, 'epoch finished');
      case 'notice':
        return log[e.level]({ ...e.fields }, e.message);
      case 'runEnded':
        return log.info(
          {
            outcome: e.summary.outcome,
            reason: e.summary.error,
            testAccuracy: e.summary.testAccuracy,
            wallSeconds: e.summary.wallSeconds,
          },
          'run ended',
        );
      case 'steps':
        return;
    }
  };
}

/** The terminal view: joins and losses, a progress bar per epoch, one line per finished epoch. */
export function progressObserver(progress: ProgressView): RunObserver {
  let connected = 0;
  let workers = 0;
  let offset = 0;
  let total = 0;
  let done = 0;
  return (e: RunEvent) => {
    switch (e.kind) {
      case 'workerJoined':
        return progress.line(`worker joined from ${e.worker.host} (${e.worker.backend}); ${++connected} connected`);
      case 'workerLeft':
        connected--;
        if (e.worker.state === 'lost') progress.line(`lost worker rank ${e.worker.rank} (${e.worker.host})`);
        return;
      case 'ringFormed':
        workers = e.workers.length;
        return;
      case 'epochStarted':
        offset = e.offset ?? 0;
        total = offset + e.samples;
        done = 0;
        return progress.begin(`epoch ${e.epoch + 1}/${e.epochs}`, total);
      case 'steps': {
        for (const r of e.records) done += r.samples;
        const last = e.records[e.records.length - 1];
        return progress.update(Math.min(total, offset + done), { loss: last?.loss ?? NaN, workers });
      }
      case 'epochFinished': {
        const o = e.outcome;
        const rate = o.samples / Math.max(1e-9, o.trainSeconds);
        return progress.line(
          `epoch ${o.epoch}: train loss ${o.trainLoss.toFixed(4)}  test accuracy ${(100 * o.testAccuracy).toFixed(2)}%  ` +
            `(${o.trainSeconds.toFixed(1)} s, ${rate.toFixed(0)} samples/s, ${workers} workers)`,
        );
      }
      case 'runEnded':
        return progress.stop();
      default:
        return;
    }
  };
}

export interface FileObserver {
  observe: RunObserver;
  /** Flush and close the file (idempotent). */
  close(): Promise<void>;
}

/** metrics.jsonl: one line per step record, `{ rank, gen, ...record }`; closed at the end of the run. */
export function metricsFileObserver(file: string, log: Logger): FileObserver {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const stream = fs.createWriteStream(file, { flags: 'a' });
  let open = true;
  stream.on('error', (err) => {
    if (open) log.error({ err, code: (err as NodeJS.ErrnoException).code, file }, 'metrics file failed');
    open = false;
  });
  const ended = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  const close = (): Promise<void> => {
    if (open) {
      open = false;
      stream.end();
    }
    return ended;
  };
  return {
    observe(e) {
      if (e.kind === 'runEnded') return void close();
      if (e.kind !== 'steps' || !open) return;
      for (const r of e.records) stream.write(`${JSON.stringify({ rank: e.rank, gen: e.gen, ...r })}\n`);
    },
    close,
  };
}

/** --summary-json: the end-of-run summary, written once; a path that cannot be written is an error, not a hang. */
export function summaryFileObserver(file: string, log: Logger): RunObserver {
  return (e) => {
    if (e.kind !== 'runEnded') return;
    try {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      fs.writeFileSync(file, `${JSON.stringify(e.summary, null, 2)}\n`);
    } catch (err) {
      log.error({ err, code: (err as NodeJS.ErrnoException).code, file }, 'could not write the summary');
    }
  };
}
