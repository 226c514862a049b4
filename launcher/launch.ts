/**
 * `ringtrain launch`: a coordinator and its workers as separate processes, like `horovodrun`.
 *
 * - `launch -np N`: N workers on this machine (a host list of one: `localhost:N`).
 * - `launch -H a:4,b:4` / `--hostfile FILE`: the coordinator here, the workers on the hosts through the launcher
 *   command (ssh by default, see remote.ts), their output streamed with a `[host:slot]` prefix.
 * - `launch --host-discovery-script PATH`: elastic; the host list is polled (discovery.ts) and workers are started
 *   and stopped to follow it, between --min-workers and --max-workers, with failing hosts blacklisted for a while.
 * Every coordinator and worker option of the option tables (shared/cli/table.ts) is passed on. Launch watches every
 * worker (fleet.ts): without --min-workers a dead worker ends the run within seconds, with a lower one the run is
 * elastic and dead workers are restarted. It exits with the coordinator's code, or 1 when it ended the run itself.
 * In every mode the token reaches the workers through their stdin, never a command line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { addRoleOptions, defaultRunDir, explicitOptions, forwardedArgs, readValues } from '../shared/cli/options.js';
import { COORDINATOR_OPTIONS, LAUNCH_OPTIONS } from '../shared/cli/table.js';
import { generateToken, resolveToken, TOKEN_ENV } from '../shared/auth.js';
import { ConfigError } from '../shared/errors.js';
import { describeExit, exitCodeOf } from '../shared/exit-codes.js';
import { resolveCpuBinding } from './cpu-binding.js';
import { say, WorkerFleet, type FleetConfig } from './fleet.js';
import {
  assignSlots,
  isLocalHost,
  parseHostfile,
  parseHostList,
  slotName,
  type HostSpec,
  type WorkerSlot,
} from './hosts.js';
import { bracketHost } from '../shared/net.js';
import { checkLauncherTemplate, DEFAULT_LAUNCHER_COMMAND, interfaceAddress, shellQuote } from './remote.js';

const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));

type Opts = Record<string, unknown>;

const LAUNCH_DEFAULTS = {
  /** A worker's exit with a code (not a signal) may be the coordinator ending the run: wait this long for it. */
  failureSettleMs: 3_000,
  restartBackoffMs: 1_000,
};

function waitForListening(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type?: string; port?: number }) => {
      if (m?.type === 'listening' && typeof m.port === 'number') resolve(m.port);
    });
    child.once('exit', (code, signal) =>
      reject(new ConfigError(`the coordinator exited (${describeExit(exitCodeOf(code, signal))}) before it listened`)),
    );
  });
}

function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(exitCodeOf(child.exitCode, child.signalCode));
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(exitCodeOf(code, signal))));
}

/** The cluster token: given (--token or RINGTRAIN_TOKEN) or generated and printed. */
function clusterToken(opts: Opts): string {
  const given = resolveToken(opts.token);
  const token = given ?? generateToken();
  if (!given) process.stdout.write(`cluster token (generated): ${token}\n`);
  return token;
}

function readHosts(opts: Opts): HostSpec[] | undefined {
  if (typeof opts.hosts === 'string') return parseHostList(opts.hosts);
  if (typeof opts.hostfile !== 'string') return undefined;
  let text: string;
  try {
    text = fs.readFileSync(opts.hostfile, 'utf8');
  } catch (err) {
    throw new ConfigError(`--hostfile ${opts.hostfile}: ${(err as Error).message}`, { cause: err });
  }
  return parseHostfile(text, opts.hostfile);
}

/** Where workers dial the coordinator: --coordinator-address, else the --network-interface's address, else here. */
function coordinatorAddress(opts: Opts, allLocal: boolean): string {
  if (typeof opts.coordinatorAddress === 'string') return opts.coordinatorAddress;
  if (typeof opts.networkInterface === 'string') {
    const address = interfaceAddress(opts.networkInterface);
    if (!address)
      throw new ConfigError(
        `--network-interface ${opts.networkInterface} has no address on this machine; give --coordinator-address`,
      );
    return address;
  }
  return allLocal ? '127.0.0.1' : os.hostname();
}

/** The worker slots: -np N on this machine, or the hosts' slots; undefined with discovery. */
function readSlots(opts: Opts): { slots?: WorkerSlot[]; local: boolean } {
  const modes = [opts.hosts, opts.hostfile, opts.hostDiscoveryScript].filter((v) => v !== undefined);
  if (modes.length > 1) throw new ConfigError('-H, --hostfile and --host-discovery-script exclude each other');
  const np = opts.np as number | undefined;
  if (modes.length === 0) {
    if (np === undefined)
      throw new ConfigError('-np is required (or -H, --hostfile or --host-discovery-script to launch on other hosts)');
    return { slots: assignSlots([{ host: 'localhost', slots: np, advertise: '127.0.0.1' }], np), local: true };
  }
  const hosts = readHosts(opts);
  return { slots: hosts ? assignSlots(hosts, np) : undefined, local: false };
}

function readMinWorkers(opts: Opts, explicit: ReadonlySet<string>, slots: WorkerSlot[] | undefined): number {
  const np = opts.np as number | undefined;
  const maxWorkers = Number(opts.maxWorkers ?? 0);
  // Fixed workers: by default every worker must be there (a failure ends the run, as in horovodrun); with discovery
  // the run starts with -np (else one) worker(s).
  const minWorkers = explicit.has('minWorkers') ? Number(opts.minWorkers) : (slots?.length ?? np ?? 1);
  if (slots && minWorkers > slots.length)
    throw new ConfigError(`--min-workers ${minWorkers} is more than the ${slots.length} worker(s) launched`);
  if (maxWorkers > 0 && (minWorkers > maxWorkers || (slots?.length ?? np ?? 0) > maxWorkers))
    throw new ConfigError(`--max-workers ${maxWorkers} is below --min-workers or -np`);
  return minWorkers;
}

/** Each worker's own arguments: its log, its data, and every forwarded option. */
function workerArgsOf(opts: Opts, explicit: ReadonlySet<string>, runDir: string, local: boolean, slots?: WorkerSlot[]) {
  const l = readValues(LAUNCH_OPTIONS, opts, 'launch');
  const logDir = local ? runDir : l.remoteRunDir;
  const dataDir = local ? (opts.dataDir as string | undefined) : l.remoteDataDir;
  const here = (s: WorkerSlot) => isLocalHost(s.host, os.hostname());
  const localCount = slots?.filter(here).length ?? 0;
  // Workers on this machine share its cores: each gets its part unless --threads says otherwise.
  const threads = (s: WorkerSlot) =>
    explicit.has('threads') || !here(s) || localCount === 0
      ? opts.threads
      : Math.max(1, Math.floor(os.availableParallelism() / localCount));
  const name = (s: WorkerSlot) =>
    local ? `worker-${s.slot}` : `worker-${slotName(s).replace(/[^A-Za-z0-9._-]/g, '_')}`;
  return (s: WorkerSlot) => [
    ...(logDir ? ['--run-dir', logDir, '--name', name(s)] : []),
    ...(dataDir ? ['--data-dir', dataDir] : []),
    ...forwardedArgs(opts, 'worker', { dataDir: undefined, threads: threads(s) }),
  ];
}

interface LaunchPlan {
  fleet: FleetConfig;
  runDir: string;
  coordinatorHost: string;
  coordinatorAddress: string;
}

function readLaunchPlan(opts: Opts, explicit: ReadonlySet<string>): LaunchPlan {
  const { slots, local } = readSlots(opts);
  const minWorkers = readMinWorkers(opts, explicit, slots);
  if (opts.resume && !explicit.has('runDir')) throw new ConfigError('--resume needs --run-dir');
  const l = readValues(LAUNCH_OPTIONS, opts, 'launch');
  const template = l.launcherCommand ?? DEFAULT_LAUNCHER_COMMAND;
  checkLauncherTemplate(template);
  const allLocal = slots !== undefined && slots.every((s) => isLocalHost(s.host, os.hostname()));
  const runDir = defaultRunDir(opts);
  const maxWorkers = Number(opts.maxWorkers ?? 0);
  return {
    runDir,
    coordinatorHost: local && !explicit.has('host') ? '127.0.0.1' : String(opts.host),
    coordinatorAddress: coordinatorAddress(opts, allLocal),
    fleet: {
      ...l,
      slots,
      discoveryScript: l.hostDiscoveryScript,
      initialWorkers: l.np ?? (maxWorkers > 0 ? maxWorkers : Infinity),
      minWorkers,
      maxWorkers,
      restartBackoffMs: LAUNCH_DEFAULTS.restartBackoffMs,
      template,
      templateGiven: l.launcherCommand !== undefined,
      workerArgs: workerArgsOf(opts, explicit, runDir, local, slots),
      // Workers on this machine run with this very node; on other hosts, the `node` on their PATH.
      remoteRingtrain: l.remoteRingtrain ?? `${local ? shellQuote(process.execPath) : 'node'} ${shellQuote(CLI)}`,
      failureSettleMs: LAUNCH_DEFAULTS.failureSettleMs,
      cpuBinding: resolveCpuBinding(l.cpuBinding, String(opts.backend)),
    },
  };
}

function spawnCoordinator(opts: Opts, plan: LaunchPlan, token: string): ChildProcess {
  const own = readValues(COORDINATOR_OPTIONS, opts, 'launch');
  const args = ['--host', plan.coordinatorHost, '--port', String(own.port)];
  args.push('--min-workers', String(plan.fleet.minWorkers), '--run-dir', plan.runDir);
  return spawn(process.execPath, [CLI, 'coordinator', ...args, ...forwardedArgs(opts, 'coordinator')], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [TOKEN_ENV]: token },
  });
}

/** Run the launch. `explicit` holds the options given on the command line (a default can depend on the mode). */
async function launch(opts: Opts, explicit: ReadonlySet<string> = new Set()): Promise<number> {
  const plan = readLaunchPlan(opts, explicit);
  const token = clusterToken(opts);
  const coordinator = spawnCoordinator(opts, plan, token);
  const fleet = new WorkerFleet(plan.fleet, token, coordinator);
  let signals = 0;
  // Ctrl-C reaches the coordinator from the terminal too; forwarding SIGTERM (a different signal) lets both arrive
  // without the second one killing it before it has stopped the workers. A second Ctrl-C ends everything now.
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      say('interrupted; stopping the run (Ctrl-C again to kill it)');
      fleet.interrupt();
      if (coordinator.exitCode === null) coordinator.kill('SIGTERM');
    } else {
      fleet.killAll();
      coordinator.kill('SIGKILL');
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const port = await waitForListening(coordinator);
    const scheme = opts.tlsCert ? 'wss' : 'ws';
    const url = `${scheme}://${bracketHost(plan.coordinatorAddress)}:${port}`;
    say(`coordinator ${url}; workers dial it there`);
    fleet.begin(url);
    const code = await exited(coordinator);
    if (code !== 0 && !fleet.failure) say(`the coordinator ended (${describeExit(code)})`);
    await fleet.shutdown();
    return code === 0 ? 0 : fleet.failure ? 1 : code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    fleet.killAll();
    if (coordinator.exitCode === null && coordinator.signalCode === null) coordinator.kill('SIGKILL');
  }
}

export function launchCommand(): Command {
  const cmd = new Command('launch').description(
    'start a coordinator and workers: N local ones (-np N, like horovodrun), or on hosts over ssh (-H, --hostfile, --host-discovery-script)',
  );
  addRoleOptions(cmd, 'launch');
  cmd.action(async (opts: Opts) => {
    process.exitCode = await launch(opts, explicitOptions(cmd));
  });
  return cmd;
}
