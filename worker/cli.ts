/** `ringtrain worker`: option parsing for one worker process; the work is startWorker's. */
import { Command } from 'commander';
import { addBackendOptions, addDataDirOption, exitWhenDone, intOption, parseHostPort, readBackend } from '../shared/cli-options.js';
import { ConfigError } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { startWorker, WORKER_DEFAULTS } from './worker.js';

export function workerCommand(): Command {
  const cmd = new Command('worker').description('join a coordinator and train with a ring allreduce');
  cmd
    .requiredOption('--coordinator <url>', 'the coordinator, as ws://HOST:PORT')
    .option('--listen <host:port>', 'ring listener address (port 0 = any free port)', `${WORKER_DEFAULTS.listenHost}:${WORKER_DEFAULTS.listenPort}`)
    .option('--advertise <host>', 'address ring peers dial to reach this worker (default: this machine\'s hostname)')
    .option('--max-payload <bytes>', 'largest message accepted on any link', intOption('--max-payload'), WORKER_DEFAULTS.maxPayloadBytes)
    .option('--ring-timeout <ms>', 'time allowed to set up the ring links', intOption('--ring-timeout'), WORKER_DEFAULTS.ringConnectTimeoutMs)
    .option('--run-dir <dir>', 'folder for this worker\'s JSON log (default: none, warnings on stderr only)')
    .option('--name <name>', 'log file name inside --run-dir', 'worker')
    .option('--log-level <level>', 'level of the JSON log file', 'info');
  addBackendOptions(cmd);
  addDataDirOption(cmd);
  cmd.action(async (opts: Record<string, unknown>) => {
    const url = String(opts.coordinator);
    if (!/^wss?:\/\//.test(url)) throw new ConfigError(`--coordinator must be a ws:// or wss:// URL, got '${url}'`);
    const listen = parseHostPort(String(opts.listen));
    const log = createRootLogger({ runDir: opts.runDir as string | undefined, name: String(opts.name), level: opts.logLevel as 'info' })
      .child({ role: 'worker', pid: process.pid });
    const handle = await startWorker({
      coordinator: url, listenHost: listen.host, listenPort: listen.port, advertise: opts.advertise as string | undefined,
      backend: readBackend(opts), dataDir: opts.dataDir as string | undefined, maxPayloadBytes: Number(opts.maxPayload),
      ringConnectTimeoutMs: Number(opts.ringTimeout), log,
    });
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void handle.close());
    exitWhenDone(handle.done);
  });
  return cmd;
}
