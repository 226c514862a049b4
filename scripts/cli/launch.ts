/**
 * `ringtrain launch -np N`: a coordinator and N local workers as separate processes, like `horovodrun -np N` on
 * localhost. It passes every coordinator and worker option on, forwards SIGINT/SIGTERM, and exits with the
 * coordinator's code (non-zero when training failed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { addCoordinatorOptions } from '../../coordinator/cli.js';
import { addBackendOptions, addDataDirOption, addOutputOptions, addTrainOptions, defaultRunDir, intOption } from '../../shared/cli-options.js';
import { generateToken, resolveToken, TOKEN_ENV } from '../../shared/auth.js';
import { ConfigError } from '../../shared/errors.js';
import { WORKER_DEFAULTS } from '../../worker/worker.js';

const CLI = fileURLToPath(new URL('../ringtrain.js', import.meta.url));

/** Option keys that go to the coordinator, and those that go to each worker. */
const COORDINATOR_KEYS = [
  'model', 'optimizer', 'lr', 'lrDecay', 'momentum', 'epochs', 'batchSize', 'seed', 'trainLimit', 'testLimit', 'targetAccuracy',
  'scaleLr', 'warmupEpochs', 'rendezvousTimeout', 'maxPayload', 'checkEvery', 'reportEvery', 'dataDir', 'summaryJson', 'logLevel', 'quiet',
  'maxWorkers', 'heartbeatMs', 'heartbeatMisses', 'stallAbortMs', 'checkpointEvery', 'checkpointKeep', 'onNonfinite', 'authTimeout',
];
const WORKER_KEYS = ['backend', 'dataDir', 'logLevel', 'heartbeatMs', 'heartbeatMisses', 'stallWarnMs', 'coordinatorRetryMs', 'ringTimeout'];

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Turn parsed option values back into command-line flags (booleans as bare flags). */
export function toArgs(opts: Record<string, unknown>, keys: readonly string[]): string[] {
  const args: string[] = [];
  for (const key of keys) {
    const v = opts[key];
    if (v === undefined || v === false) continue;
    args.push(`--${kebab(key)}`);
    if (v !== true) args.push(String(v));
  }
  return args;
}

function waitForListening(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type?: string; port?: number }) => { if (m?.type === 'listening' && typeof m.port === 'number') resolve(m.port); });
    child.once('exit', (code) => reject(new ConfigError(`the coordinator exited (code ${code}) before it listened`)));
  });
}

function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1))));
}

export async function launch(opts: Record<string, unknown>): Promise<number> {
  const np = Number(opts.np);
  if (!Number.isInteger(np) || np < 1) throw new ConfigError(`-np must be a positive integer, got ${String(opts.np)}`);
  const runDir = defaultRunDir(opts);
  const host = '127.0.0.1';
  // The token goes to the children through the environment, never on a command line (visible in ps).
  const given = resolveToken(opts.token);
  const token = given ?? generateToken();
  if (!given) process.stdout.write(`cluster token (generated): ${token}\n`);
  const env = { ...process.env, [TOKEN_ENV]: token };
  const coordArgs = [CLI, 'coordinator', '--host', host, '--port', String(opts.port ?? 0), '--min-workers', String(np), '--run-dir', runDir, ...toArgs(opts, COORDINATOR_KEYS)];
  const coordinator = spawn(process.execPath, coordArgs, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
  const children: ChildProcess[] = [coordinator];
  const forward = (signal: NodeJS.Signals) => { for (const c of children) if (c.exitCode === null) c.kill(signal); };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    const port = await waitForListening(coordinator);
    for (let i = 0; i < np; i++) {
      const workerArgs = [CLI, 'worker', '--coordinator', `ws://${host}:${port}`, '--listen', `${host}:0`, '--advertise', host,
        '--run-dir', runDir, '--name', `worker-${i}`, ...toArgs(opts, WORKER_KEYS)];
      children.push(spawn(process.execPath, workerArgs, { stdio: ['ignore', 'inherit', 'inherit'], env }));
    }
    const code = await exited(coordinator);
    // Workers stop on the coordinator's word; give them a moment, then make sure none outlives the launcher.
    const workers = children.slice(1);
    const timer = setTimeout(() => workers.forEach((w) => w.exitCode === null && w.kill('SIGKILL')), 10_000);
    const workerCodes = await Promise.all(workers.map(exited));
    clearTimeout(timer);
    return code !== 0 ? code : workerCodes.find((c) => c !== 0) ?? 0;
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

export function launchCommand(): Command {
  const cmd = new Command('launch').description('start a coordinator and N local workers (like horovodrun -np N on localhost)');
  cmd.requiredOption('-n, --np <n>', 'number of worker processes', intOption('-np'));
  addCoordinatorOptions(addTrainOptions(cmd));
  addBackendOptions(cmd);
  addDataDirOption(cmd);
  addOutputOptions(cmd);
  cmd
    .option('--stall-warn-ms <ms>', 'workers warn when a step waits on a ring peer this long', intOption('--stall-warn-ms'), WORKER_DEFAULTS.stallWarnMs)
    .option('--coordinator-retry-ms <ms>', 'workers keep reconnecting to a lost coordinator this long', intOption('--coordinator-retry-ms'), WORKER_DEFAULTS.coordinatorRetryMs)
    .option('--ring-timeout <ms>', 'time allowed to set up the ring links', intOption('--ring-timeout'), WORKER_DEFAULTS.ringConnectTimeoutMs);
  // The launcher picks a free port unless told otherwise.
  cmd.setOptionValueWithSource('port', 0, 'default');
  cmd.action(async (opts: Record<string, unknown>) => {
    process.exitCode = await launch(opts);
  });
  return cmd;
}
