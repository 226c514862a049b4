/** `ringtrain coordinator`: option parsing for the control plane; the work is startCoordinator's. */
import os from 'node:os';
import { Command } from 'commander';
import { generateToken, resolveToken, TOKEN_ENV } from '../shared/auth.js';
import {
  addRoleOptions,
  defaultRunDir,
  exitWhenDone,
  readDataOptions,
  readTrainConfig,
  readValues,
} from '../shared/cli/options.js';
import { COMMON_OPTIONS, COORDINATOR_OPTIONS, RUN_OPTIONS } from '../shared/cli/table.js';
import { ConfigError, RunFinishedError } from '../shared/errors.js';
import { exitCodeOfOutcome } from '../shared/exit-codes.js';
import { createRootLogger, type Logger } from '../shared/log.js';
import { createProgressView, type ProgressView } from '../shared/cli/progress.js';
import { COORDINATOR_DEFAULTS, startCoordinator, type ClusterSummary, type CoordinatorHandle } from './start.js';

type Opts = Record<string, unknown>;

/** The coordinator's config from its parsed options: every field from the option tables, checked together. */
function coordinatorConfig(opts: Opts, log: Logger, progress: ProgressView) {
  const { dashboardHost, dashboardPort, timeline, ...own } = readValues(COORDINATOR_OPTIONS, opts, 'coordinator');
  const { tlsCert, tlsKey, ...common } = readValues(COMMON_OPTIONS, opts, 'coordinator');
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError('--tls-cert and --tls-key go together');
  const given = resolveToken(common.token);
  return {
    generatedToken: !given,
    config: {
      ...COORDINATOR_DEFAULTS,
      ...own,
      ...readValues(RUN_OPTIONS, opts, 'coordinator'),
      heartbeatMs: common.heartbeatMs,
      heartbeatMisses: common.heartbeatMisses,
      train: readTrainConfig(opts, 'coordinator'),
      dataDir: common.dataDir,
      dataOptions: readDataOptions(opts, 'coordinator'),
      runDir: runDirOf(opts),
      summaryJson: common.summaryJson,
      token: given ?? generateToken(),
      ...(tlsCert && tlsKey ? { tls: { cert: tlsCert, key: tlsKey } } : {}),
      log,
      progress,
      dashboard: { host: dashboardHost, port: dashboardPort },
      ...(timeline ? { timeline } : {}),
    },
  };
}

function runDirOf(opts: Opts): string {
  if (opts.resume && typeof opts.runDir !== 'string') throw new ConfigError('--resume needs --run-dir');
  return defaultRunDir(opts);
}

function announce(opts: Opts, handle: CoordinatorHandle, progress: ProgressView, extra: string[]) {
  const host = String(opts.host);
  const shownHost = host === '0.0.0.0' || host === '::' ? os.hostname() : host;
  const url = `${opts.tlsCert ? 'wss' : 'ws'}://${shownHost}:${handle.port}`;
  progress.line(`coordinator ${url}  run ${handle.runId}  logs in ${runDirOf(opts)}`);
  if (handle.dashboardUrl) progress.line(`dashboard ${handle.dashboardUrl}`);
  for (const line of extra) progress.line(line);
  progress.line(`waiting for ${String(opts.minWorkers)} worker(s): ringtrain worker --coordinator ${url}`);
}

function summaryLine(summary: ClusterSummary): string {
  if (summary.outcome !== 'finished') return `run ${summary.outcome}: ${summary.error ?? ''}`;
  return `done: ${summary.epochs} epochs, ${summary.steps} steps, test accuracy ${(100 * summary.testAccuracy).toFixed(2)}%, ${summary.samplesPerSec.toFixed(0)} samples/s on ${summary.workers} workers, ${summary.wallSeconds.toFixed(1)} s`;
}

async function runCoordinator(opts: Opts): Promise<void> {
  const runDir = runDirOf(opts);
  const common = readValues(COMMON_OPTIONS, opts, 'coordinator');
  const log = createRootLogger({ runDir, name: 'coordinator', level: common.logLevel }).child({ role: 'coordinator' });
  const progress = createProgressView({ quiet: common.quiet });
  const { config, generatedToken } = coordinatorConfig(opts, log, progress);
  const handle = await startCoordinator(config).catch((err: unknown) => {
    if (!(err instanceof RunFinishedError)) throw err;
    log.info({ runId: err.runId, finishedAt: err.at }, err.message);
    progress.line(err.message);
    return undefined;
  });
  if (!handle) return exitWhenDone(Promise.resolve(0));
  const tokenLines = generatedToken
    ? [`cluster token (generated): ${config.token}\n  workers need it: export ${TOKEN_ENV}=${config.token}`]
    : [];
  announce(opts, handle, progress, tokenLines);
  if (process.send) {
    process.send({ type: 'listening', port: handle.port, runDir });
    // Started by `launch`: a launcher that vanished (even SIGKILLed) must not leave this coordinator behind.
    process.once('disconnect', () => void handle.close('the launcher went away'));
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => void handle.close(`interrupted by ${signal}`));
  const summary = await handle.done;
  await handle.shutDown;
  progress.line(summaryLine(summary));
  exitWhenDone(Promise.resolve(exitCodeOfOutcome(summary.outcome)));
}

export function coordinatorCommand(): Command {
  const cmd = new Command('coordinator').description(
    'run the control plane: rendezvous, ranks, data sharding, metrics, checkpoints',
  );
  addRoleOptions(cmd, 'coordinator');
  cmd.action((opts: Opts) => runCoordinator(opts));
  return cmd;
}
