/** `ringtrain coordinator`: option parsing for the control plane; the work is startCoordinator's. */
import os from 'node:os';
import { Command } from 'commander';
import { addDataDirOption, addOutputOptions, addTrainOptions, defaultRunDir, exitWhenDone, intOption, readTrainConfig } from '../shared/cli-options.js';
import { createRootLogger } from '../shared/log.js';
import { createProgressView } from '../shared/progress.js';
import { COORDINATOR_DEFAULTS, startCoordinator, type ClusterSummary } from './coordinator.js';

const D = COORDINATOR_DEFAULTS;

export function addCoordinatorOptions(cmd: Command): Command {
  return cmd
    .option('--host <host>', 'address to listen on', D.host)
    .option('--port <port>', 'control port workers connect to (0 = any free port)', intOption('--port'), D.port)
    .option('--min-workers <n>', 'start training once this many workers joined', intOption('--min-workers'), D.minWorkers)
    .option('--rendezvous-timeout <ms>', 'give up if too few workers joined within this time', intOption('--rendezvous-timeout'), D.rendezvousTimeoutMs)
    .option('--max-payload <bytes>', 'largest control message accepted from a worker', intOption('--max-payload'), D.maxPayloadBytes)
    .option('--check-every <steps>', 'compare replica parameter hashes every N steps (0 = never)', intOption('--check-every'), D.checkEvery)
    .option('--report-every <steps>', 'workers send step metrics every N steps', intOption('--report-every'), D.reportEvery);
}

export function exitCodeOf(summary: ClusterSummary): number {
  return summary.outcome === 'finished' ? 0 : summary.outcome === 'interrupted' ? 130 : 1;
}

export function coordinatorCommand(): Command {
  const cmd = new Command('coordinator').description('run the control plane: rendezvous, ranks, data sharding, metrics');
  addCoordinatorOptions(addTrainOptions(cmd));
  addDataDirOption(cmd);
  addOutputOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const runDir = defaultRunDir(opts);
    const log = createRootLogger({ runDir, name: 'coordinator', level: opts.logLevel as 'info' }).child({ role: 'coordinator' });
    const progress = createProgressView({ quiet: Boolean(opts.quiet) });
    const handle = await startCoordinator({
      host: String(opts.host), port: Number(opts.port), minWorkers: Math.max(1, Number(opts.minWorkers)), train: readTrainConfig(opts),
      dataDir: opts.dataDir as string | undefined, runDir, summaryJson: opts.summaryJson as string | undefined,
      rendezvousTimeoutMs: Number(opts.rendezvousTimeout), maxPayloadBytes: Number(opts.maxPayload),
      checkEvery: Number(opts.checkEvery), reportEvery: Math.max(1, Number(opts.reportEvery)), log, progress,
    });
    const shownHost = opts.host === '0.0.0.0' || opts.host === '::' ? os.hostname() : String(opts.host);
    progress.line(`coordinator ws://${shownHost}:${handle.port}  run ${handle.runId}  logs in ${runDir}`);
    progress.line(`waiting for ${String(opts.minWorkers)} worker(s): ringtrain worker --coordinator ws://${shownHost}:${handle.port}`);
    process.send?.({ type: 'listening', port: handle.port, runDir });
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => void handle.close(`interrupted by ${signal}`));
    }
    const summary = await handle.done;
    if (summary.outcome !== 'finished') progress.line(`run ${summary.outcome}: ${summary.error ?? ''}`);
    else progress.line(`done: ${summary.epochs} epochs, ${summary.steps} steps, test accuracy ${(100 * summary.testAccuracy).toFixed(2)}%, ${summary.samplesPerSec.toFixed(0)} samples/s on ${summary.workers} workers, ${summary.wallSeconds.toFixed(1)} s`);
    exitWhenDone(Promise.resolve(exitCodeOf(summary)));
  });
  return cmd;
}
