/** `ringtrain worker`: option parsing for one worker process; the work is startWorker's. */
import fs from 'node:fs';
import { Command } from 'commander';
import { resolveToken, TOKEN_ENV } from '../shared/auth.js';
import {
  addBackendOptions,
  addDataDirOption,
  exitWhenDone,
  intOption,
  parseHostPort,
  readDataOptions,
  readBackend,
} from '../shared/cli/options.js';
import { ConfigError } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { startWorker, WORKER_DEFAULTS as D } from './worker.js';

export function workerCommand(): Command {
  const cmd = new Command('worker').description('join a coordinator and train with a ring allreduce');
  cmd
    .requiredOption('--coordinator <url>', 'the coordinator, as ws://HOST:PORT (wss:// with TLS)')
    .option('--token <secret>', `cluster token (default: ${TOKEN_ENV})`)
    .option('--listen <host:port>', 'ring listener address (port 0 = any free port)', `${D.listenHost}:${D.listenPort}`)
    .option('--advertise <host>', "address ring peers dial to reach this worker (default: this machine's hostname)")
    .option(
      '--heartbeat-ms <ms>',
      'heartbeat and ping interval on every link',
      intOption('--heartbeat-ms'),
      D.heartbeatMs,
    )
    .option(
      '--heartbeat-misses <n>',
      'missed pongs before a link is declared dead',
      intOption('--heartbeat-misses'),
      D.heartbeatMisses,
    )
    .option(
      '--stall-warn-ms <ms>',
      'warn when a step waits on a ring peer this long',
      intOption('--stall-warn-ms'),
      D.stallWarnMs,
    )
    .option(
      '--coordinator-retry-ms <ms>',
      'keep reconnecting to a lost coordinator this long',
      intOption('--coordinator-retry-ms'),
      D.coordinatorRetryMs,
    )
    .option(
      '--max-payload <bytes>',
      'largest message accepted on any link',
      intOption('--max-payload'),
      D.maxPayloadBytes,
    )
    .option(
      '--ring-timeout <ms>',
      'time allowed to set up the ring links',
      intOption('--ring-timeout'),
      D.ringConnectTimeoutMs,
    )
    .option('--tls-ca <file>', 'trust this CA (PEM) for a wss:// coordinator')
    .option('--run-dir <dir>', "folder for this worker's JSON log (default: none, warnings on stderr only)")
    .option('--name <name>', 'log file name inside --run-dir', 'worker')
    .option('--log-level <level>', 'level of the JSON log file', 'info');
  addBackendOptions(cmd);
  addDataDirOption(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const url = String(opts.coordinator);
    if (!/^wss?:\/\//.test(url)) throw new ConfigError(`--coordinator must be a ws:// or wss:// URL, got '${url}'`);
    const token = resolveToken(opts.token);
    if (!token)
      throw new ConfigError(`a cluster token is required: --token or ${TOKEN_ENV} (the coordinator prints it)`);
    const listen = parseHostPort(String(opts.listen));
    const log = createRootLogger({
      runDir: opts.runDir as string | undefined,
      name: String(opts.name),
      level: opts.logLevel as 'info',
    }).child({ role: 'worker', pid: process.pid });
    const handle = await startWorker({
      coordinator: url,
      token,
      listenHost: listen.host,
      listenPort: listen.port,
      advertise: opts.advertise as string | undefined,
      backend: readBackend(opts),
      dataDir: opts.dataDir as string | undefined,
      dataOptions: readDataOptions(opts),
      maxPayloadBytes: Number(opts.maxPayload),
      ringConnectTimeoutMs: Number(opts.ringTimeout),
      heartbeatMs: Number(opts.heartbeatMs),
      heartbeatMisses: Number(opts.heartbeatMisses),
      stallWarnMs: Number(opts.stallWarnMs),
      coordinatorRetryMs: Number(opts.coordinatorRetryMs),
      ...(opts.tlsCa ? { tlsCa: fs.readFileSync(String(opts.tlsCa), 'utf8') } : {}),
      log,
    });
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void handle.close());
    exitWhenDone(handle.done);
  });
  return cmd;
}
