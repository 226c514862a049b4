/** `ringtrain coordinator`: option parsing for the control plane; the work is startCoordinator's. */
import os from 'node:os';
import { Command, Option } from 'commander';
import { COMPRESSIONS } from '../shared/ring/allreduce.js';
import { ConfigError } from '../shared/errors.js';
import { generateToken, resolveToken, TOKEN_ENV } from '../shared/auth.js';
import {
  addDataDirOption,
  addOutputOptions,
  addTrainOptions,
  defaultRunDir,
  exitWhenDone,
  intOption,
  readTrainConfig,
} from '../shared/cli/options.js';
import { createRootLogger } from '../shared/log.js';
import { createProgressView } from '../shared/cli/progress.js';
import { DASHBOARD_DEFAULTS } from './dashboard/server.js';
import { COORDINATOR_DEFAULTS, startCoordinator, type ClusterSummary } from './start.js';

const D = COORDINATOR_DEFAULTS;

export function addCoordinatorOptions(cmd: Command): Command {
  return cmd
    .option('--host <host>', 'address to listen on', D.host)
    .option('--port <port>', 'control port workers connect to (0 = any free port)', intOption('--port'), D.port)
    .option(
      '--min-workers <n>',
      'train only while at least this many workers are connected',
      intOption('--min-workers'),
      D.minWorkers,
    )
    .option(
      '--max-workers <n>',
      'admit at most this many workers (0 = no limit)',
      intOption('--max-workers'),
      D.maxWorkers,
    )
    .option(
      '--token <secret>',
      `cluster token workers must prove they know (default: ${TOKEN_ENV}, else a generated one, printed)`,
    )
    .option(
      '--rendezvous-timeout <ms>',
      'give up if too few workers joined within this time',
      intOption('--rendezvous-timeout'),
      D.rendezvousTimeoutMs,
    )
    .option(
      '--heartbeat-ms <ms>',
      'heartbeat interval expected from workers',
      intOption('--heartbeat-ms'),
      D.heartbeatMs,
    )
    .option(
      '--heartbeat-misses <n>',
      'missed heartbeats before a worker is declared dead',
      intOption('--heartbeat-misses'),
      D.heartbeatMisses,
    )
    .option(
      '--stall-abort-ms <ms>',
      'evict the worker a step has waited on this long (0 = never)',
      intOption('--stall-abort-ms'),
      D.stallAbortMs,
    )
    .option(
      '--checkpoint-every <steps>',
      'checkpoint every N steps (0 = at the end of every epoch only)',
      intOption('--checkpoint-every'),
      D.checkpointEvery,
    )
    .option('--checkpoint-keep <n>', 'checkpoints to keep', intOption('--checkpoint-keep'), D.checkpointKeep)
    .option('--resume', 'continue the run in --run-dir from its newest valid checkpoint', false)
    .option(
      '--resume-run <id>',
      "with --resume: accept this run's checkpoints (default: the run in --run-dir/run.json)",
    )
    .addOption(
      new Option(
        '--on-nonfinite <action>',
        'NaN/Inf in the averaged gradients: skip the step on every worker, or abort',
      )
        .choices(['skip', 'abort'])
        .default(D.nonFinite),
    )
    .addOption(
      new Option(
        '--compression <codec>',
        'gradient wire encoding: fp16 halves the allreduce bytes (as hvd.Compression.fp16)',
      )
        .choices(COMPRESSIONS)
        .default(D.compression),
    )
    .option(
      '--max-payload <bytes>',
      'largest control message accepted from a worker',
      intOption('--max-payload'),
      D.maxPayloadBytes,
    )
    .option(
      '--auth-timeout <ms>',
      'close links that have not authenticated within this time',
      intOption('--auth-timeout'),
      D.authTimeoutMs,
    )
    .option(
      '--check-every <steps>',
      'compare replica parameter hashes every N steps (0 = never)',
      intOption('--check-every'),
      D.checkEvery,
    )
    .option(
      '--report-every <steps>',
      'workers send step metrics every N steps',
      intOption('--report-every'),
      D.reportEvery,
    )
    .option('--tls-cert <file>', 'serve the control port over TLS (wss://) with this certificate (PEM)')
    .option('--tls-key <file>', 'private key for --tls-cert (PEM)')
    .option('--dashboard-host <host>', 'address of the monitoring dashboard', DASHBOARD_DEFAULTS.host)
    .option(
      '--dashboard-port <port>',
      'dashboard port (0 = any free port)',
      intOption('--dashboard-port'),
      DASHBOARD_DEFAULTS.port,
    )
    .option('--timeline <file>', 'write a Chrome trace of every step of every worker (Perfetto, chrome://tracing)');
}

export function exitCodeOf(summary: ClusterSummary): number {
  return summary.outcome === 'finished' ? 0 : summary.outcome === 'interrupted' ? 130 : 1;
}

export function coordinatorCommand(): Command {
  const cmd = new Command('coordinator').description(
    'run the control plane: rendezvous, ranks, data sharding, metrics, checkpoints',
  );
  addCoordinatorOptions(addTrainOptions(cmd));
  addDataDirOption(cmd);
  addOutputOptions(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const runDir =
      opts.resume && typeof opts.runDir !== 'string'
        ? (() => {
            throw new ConfigError('--resume needs --run-dir');
          })()
        : defaultRunDir(opts);
    const log = createRootLogger({ runDir, name: 'coordinator', level: opts.logLevel as 'info' }).child({
      role: 'coordinator',
    });
    const progress = createProgressView({ quiet: Boolean(opts.quiet) });
    const train = readTrainConfig(opts);
    const given = resolveToken(opts.token);
    const token = given ?? generateToken();
    const handle = await startCoordinator({
      host: String(opts.host),
      port: Number(opts.port),
      train,
      dataDir: opts.dataDir as string | undefined,
      runDir,
      summaryJson: opts.summaryJson as string | undefined,
      token,
      resume: Boolean(opts.resume),
      ...(typeof opts.resumeRun === 'string' ? { resumeRun: opts.resumeRun } : {}),
      minWorkers: Math.max(1, Number(opts.minWorkers)),
      maxWorkers: Number(opts.maxWorkers),
      rendezvousTimeoutMs: Number(opts.rendezvousTimeout),
      ringFormTimeoutMs: COORDINATOR_DEFAULTS.ringFormTimeoutMs,
      heartbeatMs: Number(opts.heartbeatMs),
      heartbeatMisses: Number(opts.heartbeatMisses),
      stallAbortMs: Number(opts.stallAbortMs),
      checkpointEvery: Number(opts.checkpointEvery),
      checkpointKeep: Math.max(1, Number(opts.checkpointKeep)),
      nonFinite: opts.onNonfinite === 'abort' ? 'abort' : 'skip',
      compression: opts.compression === 'fp16' ? 'fp16' : 'none',
      maxPayloadBytes: Number(opts.maxPayload),
      authTimeoutMs: Number(opts.authTimeout),
      maxPendingAuth: COORDINATOR_DEFAULTS.maxPendingAuth,
      checkEvery: Number(opts.checkEvery),
      reportEvery: Math.max(1, Number(opts.reportEvery)),
      ...(opts.tlsCert && opts.tlsKey ? { tls: { cert: String(opts.tlsCert), key: String(opts.tlsKey) } } : {}),
      log,
      progress,
      dashboard: { host: String(opts.dashboardHost), port: Number(opts.dashboardPort) },
      ...(opts.timeline ? { timeline: String(opts.timeline) } : {}),
    });
    const shownHost = opts.host === '0.0.0.0' || opts.host === '::' ? os.hostname() : String(opts.host);
    const scheme = opts.tlsCert ? 'wss' : 'ws';
    progress.line(`coordinator ${scheme}://${shownHost}:${handle.port}  run ${handle.runId}  logs in ${runDir}`);
    if (handle.dashboardUrl) progress.line(`dashboard ${handle.dashboardUrl}`);
    if (!given) progress.line(`cluster token (generated): ${token}\n  workers need it: export ${TOKEN_ENV}=${token}`);
    progress.line(
      `waiting for ${String(opts.minWorkers)} worker(s): ringtrain worker --coordinator ${scheme}://${shownHost}:${handle.port}`,
    );
    if (process.send) {
      process.send({ type: 'listening', port: handle.port, runDir });
      // Started by `launch`: a launcher that vanished (even SIGKILLed) must not leave this coordinator behind.
      process.once('disconnect', () => void handle.close('the launcher went away'));
    }
    for (const signal of ['SIGINT', 'SIGTERM'] as const)
      process.once(signal, () => void handle.close(`interrupted by ${signal}`));
    const summary = await handle.done;
    await handle.close();
    if (summary.outcome !== 'finished') progress.line(`run ${summary.outcome}: ${summary.error ?? ''}`);
    else
      progress.line(
        `done: ${summary.epochs} epochs, ${summary.steps} steps, test accuracy ${(100 * summary.testAccuracy).toFixed(2)}%, ${summary.samplesPerSec.toFixed(0)} samples/s on ${summary.workers} workers, ${summary.wallSeconds.toFixed(1)} s`,
      );
    exitWhenDone(Promise.resolve(exitCodeOf(summary)));
  });
  return cmd;
}
