/** `ringtrain worker`: option parsing for one worker process; the work is startWorker's. */
import fs from 'node:fs';
import { Command } from 'commander';
import { resolveToken, TOKEN_ENV } from '../shared/auth.js';
import { addRoleOptions, exitWhenDone, parseHostPort, readDataOptions, readValues } from '../shared/cli/options.js';
import { COMMON_OPTIONS, WORKER_OPTIONS } from '../shared/cli/table.js';
import { ConfigError } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { startWorker, type WorkerConfig } from './worker.js';

type Opts = Record<string, unknown>;

function readFileOption(flag: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${flag} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** The worker's config from its parsed options (the log is made by the caller, from the same options). */
function workerConfig(opts: Opts): Omit<WorkerConfig, 'log'> {
  const { coordinator, listen, tlsCa, name, ...own } = readValues(WORKER_OPTIONS, opts, 'worker');
  const { tlsCert, tlsKey, ...common } = readValues(COMMON_OPTIONS, opts, 'worker');
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError('--tls-cert and --tls-key go together');
  if (!coordinator || !/^wss?:\/\//.test(coordinator))
    throw new ConfigError(`--coordinator must be a ws:// or wss:// URL, got '${coordinator}'`);
  const token = resolveToken(common.token);
  if (!token) throw new ConfigError(`a cluster token is required: --token or ${TOKEN_ENV} (the coordinator prints it)`);
  const address = parseHostPort(listen);
  return {
    ...own,
    coordinator,
    token,
    listenHost: address.host,
    listenPort: address.port,
    backend: common.backend,
    threads: common.threads,
    stepGraph: common.stepGraph,
    dataDir: common.dataDir,
    dataOptions: readDataOptions(opts, 'worker'),
    heartbeatMs: common.heartbeatMs,
    heartbeatMisses: common.heartbeatMisses,
    ...(tlsCa ? { tlsCa: readFileOption('--tls-ca', tlsCa) } : {}),
    ...(tlsCert && tlsKey
      ? { tlsCert: readFileOption('--tls-cert', tlsCert), tlsKey: readFileOption('--tls-key', tlsKey) }
      : {}),
  };
}

export function workerCommand(): Command {
  const cmd = new Command('worker').description('join a coordinator and train with a ring allreduce');
  addRoleOptions(cmd, 'worker');
  cmd.action(async (opts: Opts) => {
    const config = workerConfig(opts);
    const { tlsCert, tlsKey, ...common } = readValues(COMMON_OPTIONS, opts, 'worker');
    if ((tlsCert === undefined) !== (tlsKey === undefined))
      throw new ConfigError('--tls-cert and --tls-key go together');
    const log = createRootLogger({
      runDir: common.runDir,
      name: readValues(WORKER_OPTIONS, opts, 'worker').name,
      level: common.logLevel,
    }).child({ role: 'worker' });
    const handle = await startWorker({ ...config, log });
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void handle.close());
    exitWhenDone(handle.done);
  });
  return cmd;
}
