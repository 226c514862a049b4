/**
 * `ringtrain launch`: a coordinator and its workers as separate processes, like `horovodrun`.
 *
 * - `launch -np N`: N workers on this machine. It passes every coordinator and worker option on, forwards
 *   SIGINT/SIGTERM, and exits with the coordinator's code (non-zero when training failed).
 * - `launch -H a:4,b:4` / `--hostfile FILE`: the coordinator here, the workers on the hosts through the launcher
 *   command (ssh by default, see remote.ts), their output streamed with a `[host:slot]` prefix. With the default
 *   --min-workers (every worker) a worker that fails ends the run, as in horovodrun; a lower --min-workers lets the
 *   run go on elastically with the survivors.
 * - `launch --host-discovery-script PATH`: elastic; the host list is polled (discovery.ts) and workers are started
 *   and stopped to follow it, between --min-workers and --max-workers, with failing hosts blacklisted for a while.
 * In every mode the token reaches the workers through their environment or stdin, never a command line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { addCoordinatorOptions } from '../coordinator/cli.js';
import {
  addBackendOptions,
  addDataDirOption,
  addOutputOptions,
  addTrainOptions,
  defaultRunDir,
  intOption,
} from '../shared/cli/options.js';
import { generateToken, resolveToken, TOKEN_ENV } from '../shared/auth.js';
import { ConfigError } from '../shared/errors.js';
import { WORKER_DEFAULTS } from '../worker/worker.js';
import { BLACKLIST_DEFAULTS, DiscoveryPoller, HostBlacklist, planPlacement, runDiscoveryScript } from './discovery.js';
import {
  assignSlots,
  isLocalHost,
  parseHostfile,
  parseHostList,
  slotName,
  type HostSpec,
  type WorkerSlot,
} from './hosts.js';
import {
  checkLauncherTemplate,
  DEFAULT_LAUNCHER_COMMAND,
  interfaceAddress,
  LOCAL_LAUNCHER_COMMAND,
  RemoteWorker,
  renderLauncherCommand,
  shellQuote,
  workerScript,
} from './remote.js';

const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));

/** Option keys that go to the coordinator, and those that go to each worker. */
const COORDINATOR_KEYS = [
  'model',
  'optimizer',
  'lr',
  'lrDecay',
  'momentum',
  'epochs',
  'batchSize',
  'seed',
  'trainLimit',
  'testLimit',
  'targetAccuracy',
  'scaleLr',
  'warmupEpochs',
  'rendezvousTimeout',
  'maxPayload',
  'checkEvery',
  'reportEvery',
  'dataDir',
  'imageSize',
  'imageFit',
  'colorMode',
  'validationSplit',
  'imageSize',
  'imageFit',
  'colorMode',
  'validationSplit',
  'augment',
  'summaryJson',
  'logLevel',
  'quiet',
  'maxWorkers',
  'heartbeatMs',
  'heartbeatMisses',
  'stallAbortMs',
  'checkpointEvery',
  'checkpointKeep',
  'onNonfinite',
  'authTimeout',
  'dashboardHost',
  'dashboardPort',
  'timeline',
  'compression',
];
const WORKER_KEYS = [
  'backend',
  'dataDir',
  'logLevel',
  'heartbeatMs',
  'heartbeatMisses',
  'stallWarnMs',
  'coordinatorRetryMs',
  'ringTimeout',
];
/** A local --data-dir means nothing on another host; remote workers get --remote-data-dir instead. */
const REMOTE_WORKER_KEYS = WORKER_KEYS.filter((k) => k !== 'dataDir');

export const LAUNCH_DEFAULTS = {
  shutdownGraceMs: 10_000,
  discoveryIntervalMs: 3_000,
  discoveryTimeoutMs: 10_000,
  hostFailureLimit: BLACKLIST_DEFAULTS.failureLimit,
  blacklistCooldownMs: BLACKLIST_DEFAULTS.cooldownMs,
};

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
    child.on('message', (m: { type?: string; port?: number }) => {
      if (m?.type === 'listening' && typeof m.port === 'number') resolve(m.port);
    });
    child.once('exit', (code) => reject(new ConfigError(`the coordinator exited (code ${code}) before it listened`)));
  });
}

function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1))));
}

/** The cluster token: given (--token or RINGTRAIN_TOKEN) or generated and printed. */
function clusterToken(opts: Record<string, unknown>): string {
  const given = resolveToken(opts.token);
  const token = given ?? generateToken();
  if (!given) process.stdout.write(`cluster token (generated): ${token}\n`);
  return token;
}

function spawnCoordinator(args: string[], token: string): ChildProcess {
  return spawn(process.execPath, [CLI, 'coordinator', ...args], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [TOKEN_ENV]: token },
  });
}

/**
 * Run the launch. `explicit` holds the option keys given on the command line (so a default can depend on the mode).
 */
export async function launch(
  opts: Record<string, unknown>,
  explicit: ReadonlySet<string> = new Set(),
): Promise<number> {
  const hostModes = [opts.hosts, opts.hostfile, opts.hostDiscoveryScript].filter((v) => v !== undefined);
  if (hostModes.length > 1) throw new ConfigError('-H, --hostfile and --host-discovery-script exclude each other');
  if (hostModes.length === 1) return launchOnHosts(opts, explicit);
  return launchLocal(opts);
}

/** `launch -np N` on this machine. */
async function launchLocal(opts: Record<string, unknown>): Promise<number> {
  if (opts.np === undefined)
    throw new ConfigError('-np is required (or -H, --hostfile or --host-discovery-script to launch on other hosts)');
  const np = Number(opts.np);
  if (!Number.isInteger(np) || np < 1) throw new ConfigError(`-np must be a positive integer, got ${String(opts.np)}`);
  const runDir = defaultRunDir(opts);
  const host = '127.0.0.1';
  // The token goes to the children through the environment, never on a command line (visible in ps).
  const token = clusterToken(opts);
  const env = { ...process.env, [TOKEN_ENV]: token };
  const coordinator = spawnCoordinator(
    [
      '--host',
      host,
      '--port',
      String(opts.port ?? 0),
      '--min-workers',
      String(np),
      '--run-dir',
      runDir,
      ...toArgs(opts, COORDINATOR_KEYS),
    ],
    token,
  );
  const children: ChildProcess[] = [coordinator];
  const forward = (signal: NodeJS.Signals) => {
    for (const c of children) if (c.exitCode === null) c.kill(signal);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    const port = await waitForListening(coordinator);
    for (let i = 0; i < np; i++) {
      const workerArgs = [
        CLI,
        'worker',
        '--coordinator',
        `ws://${host}:${port}`,
        '--listen',
        `${host}:0`,
        '--advertise',
        host,
        '--run-dir',
        runDir,
        '--name',
        `worker-${i}`,
        ...toArgs(opts, WORKER_KEYS),
      ];
      children.push(spawn(process.execPath, workerArgs, { stdio: ['ignore', 'inherit', 'inherit'], env }));
    }
    const code = await exited(coordinator);
    // Workers stop on the coordinator's word; give them a moment, then make sure none outlives the launcher.
    const workers = children.slice(1);
    const timer = setTimeout(
      () => workers.forEach((w) => w.exitCode === null && w.kill('SIGKILL')),
      Number(opts.shutdownGraceMs ?? LAUNCH_DEFAULTS.shutdownGraceMs),
    );
    const workerCodes = await Promise.all(workers.map(exited));
    clearTimeout(timer);
    return code !== 0 ? code : (workerCodes.find((c) => c !== 0) ?? 0);
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

/** Everything a launch on hosts needs, read and checked before any process starts. */
interface HostsLaunchConfig {
  /** Fixed hosts (-H, --hostfile); absent with discovery. */
  slots?: WorkerSlot[];
  discoveryScript?: string;
  /** With discovery: the most workers started at the first poll. */
  initialWorkers: number;
  minWorkers: number;
  maxWorkers: number;
  template: string;
  templateGiven: boolean;
  sshPort?: number;
  sshIdentity?: string;
  networkInterface?: string;
  coordinatorAddress: string;
  remoteRingtrain: string;
  remoteRunDir?: string;
  remoteDataDir?: string;
  workerPort: number;
  shutdownGraceMs: number;
  /** How long the coordinator takes to notice a lost worker (heartbeat interval x misses). */
  failureSettleMs: number;
  discoveryIntervalMs: number;
  discoveryTimeoutMs: number;
  hostFailureLimit: number;
  blacklistCooldownMs: number;
}

function readHosts(opts: Record<string, unknown>): HostSpec[] | undefined {
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

/** Where workers dial the coordinator: --coordinator-address, else the --network-interface's address here, else this host. */
function coordinatorAddress(opts: Record<string, unknown>, allLocal: boolean): string {
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

function readHostsConfig(opts: Record<string, unknown>, explicit: ReadonlySet<string>): HostsLaunchConfig {
  const np = opts.np === undefined ? undefined : Number(opts.np);
  if (np !== undefined && (!Number.isInteger(np) || np < 1))
    throw new ConfigError(`-np must be a positive integer, got ${String(opts.np)}`);
  const hosts = readHosts(opts);
  const slots = hosts ? assignSlots(hosts, np) : undefined;
  const maxWorkers = Number(opts.maxWorkers ?? 0);
  // Static hosts: by default every worker must be there (a failure ends the run, as in horovodrun); with discovery
  // the run starts with -np (else one) worker(s).
  const minWorkers = explicit.has('minWorkers') ? Number(opts.minWorkers) : slots ? slots.length : (np ?? 1);
  if (minWorkers < 1) throw new ConfigError('--min-workers must be at least 1');
  if (slots && minWorkers > slots.length)
    throw new ConfigError(`--min-workers ${minWorkers} is more than the ${slots.length} worker(s) launched`);
  if (maxWorkers > 0 && (minWorkers > maxWorkers || (slots?.length ?? np ?? 0) > maxWorkers)) {
    throw new ConfigError(`--max-workers ${maxWorkers} is below --min-workers or -np`);
  }
  const template = String(opts.launcherCommand ?? DEFAULT_LAUNCHER_COMMAND);
  checkLauncherTemplate(template);
  const allLocal = slots !== undefined && slots.every((s) => isLocalHost(s.host, os.hostname()));
  return {
    slots,
    discoveryScript: typeof opts.hostDiscoveryScript === 'string' ? opts.hostDiscoveryScript : undefined,
    initialWorkers: np ?? (maxWorkers > 0 ? maxWorkers : Infinity),
    minWorkers,
    maxWorkers,
    template,
    templateGiven: explicit.has('launcherCommand'),
    sshPort: opts.sshPort === undefined ? undefined : Number(opts.sshPort),
    sshIdentity: opts.sshIdentity as string | undefined,
    networkInterface: opts.networkInterface as string | undefined,
    coordinatorAddress: coordinatorAddress(opts, allLocal),
    remoteRingtrain: String(opts.remoteRingtrain ?? `node ${shellQuote(CLI)}`),
    remoteRunDir: opts.remoteRunDir as string | undefined,
    remoteDataDir: opts.remoteDataDir as string | undefined,
    workerPort: Number(opts.workerPort ?? 0),
    shutdownGraceMs: Number(opts.shutdownGraceMs ?? LAUNCH_DEFAULTS.shutdownGraceMs),
    failureSettleMs: Number(opts.heartbeatMs ?? 1000) * Number(opts.heartbeatMisses ?? 5),
    discoveryIntervalMs: Math.max(100, Number(opts.discoveryIntervalMs ?? LAUNCH_DEFAULTS.discoveryIntervalMs)),
    discoveryTimeoutMs: Number(opts.discoveryTimeoutMs ?? LAUNCH_DEFAULTS.discoveryTimeoutMs),
    hostFailureLimit: Math.max(1, Number(opts.hostFailureLimit ?? LAUNCH_DEFAULTS.hostFailureLimit)),
    blacklistCooldownMs: Number(opts.blacklistCooldownMs ?? LAUNCH_DEFAULTS.blacklistCooldownMs),
  };
}

function wsUrl(address: string, port: number): string {
  return `ws://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

function say(line: string): void {
  process.stderr.write(`launch: ${line}\n`);
}

/** `launch -H ...`, `--hostfile`, `--host-discovery-script`: the coordinator here, the workers on the hosts. */
async function launchOnHosts(opts: Record<string, unknown>, explicit: ReadonlySet<string>): Promise<number> {
  const cfg = readHostsConfig(opts, explicit);
  const runDir = defaultRunDir(opts);
  const token = clusterToken(opts);
  const coordinator = spawnCoordinator(
    [
      '--host',
      String(opts.host),
      '--port',
      String(opts.port ?? 0),
      '--min-workers',
      String(cfg.minWorkers),
      '--run-dir',
      runDir,
      ...toArgs(opts, COORDINATOR_KEYS),
    ],
    token,
  );
  const fleet = new WorkerFleet(cfg, opts, token, coordinator);
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
    const url = wsUrl(cfg.coordinatorAddress, port);
    say(`coordinator ${url}; workers dial it there`);
    fleet.begin(url);
    const code = await exited(coordinator);
    await fleet.shutdown();
    return code === 0 ? 0 : fleet.failure ? 1 : code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    fleet.killAll();
    if (coordinator.exitCode === null && coordinator.signalCode === null) coordinator.kill('SIGKILL');
  }
}

function waitWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([Promise.all(promises).then(() => undefined), timeout]).finally(() => clearTimeout(timer));
}

/** The workers of a launch on hosts: started, followed, stopped. */
class WorkerFleet {
  private readonly workers = new Map<string, RemoteWorker>();
  private readonly blacklist: HostBlacklist;
  private hosts: HostSpec[] = [];
  private poller?: DiscoveryPoller;
  private firstPlacement = true;
  private ending = false;
  /** The run is ending (finished, or interrupted): exits are not failures and no more workers are placed. */
  private runOver = false;
  private coordinatorUrl = '';
  /** Why the launcher ended the run, if it did. */
  failure?: string;

  constructor(
    private readonly cfg: HostsLaunchConfig,
    private readonly opts: Record<string, unknown>,
    private readonly token: string,
    private readonly coordinator: ChildProcess,
  ) {
    this.blacklist = new HostBlacklist({
      failureLimit: cfg.hostFailureLimit,
      cooldownMs: cfg.blacklistCooldownMs,
      maxCooldownMs: 8 * cfg.blacklistCooldownMs,
    });
  }

  begin(coordinatorUrl: string): void {
    this.coordinatorUrl = coordinatorUrl;
    if (this.cfg.slots) {
      for (const slot of this.cfg.slots) this.startWorker(slot);
      return;
    }
    const script = this.cfg.discoveryScript!;
    this.poller = new DiscoveryPoller({
      intervalMs: this.cfg.discoveryIntervalMs,
      discover: () => runDiscoveryScript(script, this.cfg.discoveryTimeoutMs),
      onHosts: (hosts) => {
        this.hosts = hosts;
        this.place();
      },
      onError: (err) => say(`${(err as Error).message}; keeping the previous host list`),
    });
    this.poller.start();
  }

  /** Follow the discovered hosts: start workers on free slots, stop those on hosts that left or were blacklisted. */
  private place(): void {
    if (this.ending || this.runOver) return;
    const now = Date.now();
    const limit = this.cfg.maxWorkers > 0 ? this.cfg.maxWorkers : Infinity;
    const cap = this.firstPlacement ? Math.min(limit, this.cfg.initialWorkers) : limit;
    this.firstPlacement = false;
    const running = [...this.workers.values()].map((w) => w.slot);
    const { start, stop } = planPlacement(this.hosts, running, {
      cap,
      excluded: (h) => this.blacklist.isBlacklisted(h, now),
    });
    for (const slot of stop) this.stopWorker(slot, this.stopReason(slot.host, now));
    for (const slot of start) this.startWorker(slot);
  }

  private stopReason(host: string, now: number): string {
    if (this.blacklist.isBlacklisted(host, now)) return 'its host is blacklisted';
    return this.hosts.some((h) => h.host === host)
      ? 'its host offers fewer slots (or --max-workers is reached)'
      : 'its host left the host list';
  }

  private commandLine(slot: WorkerSlot): string {
    const local = isLocalHost(slot.host, os.hostname());
    const template = !this.cfg.templateGiven && local ? LOCAL_LAUNCHER_COMMAND : this.cfg.template;
    const advertise =
      slot.advertise ?? (this.cfg.networkInterface ? undefined : slot.host === 'localhost' ? '127.0.0.1' : slot.host);
    const port = this.cfg.workerPort === 0 ? 0 : this.cfg.workerPort + slot.slot;
    const listenHost = advertise?.includes(':') ? '[::]' : '0.0.0.0';
    const args = [
      '--coordinator',
      this.coordinatorUrl,
      '--listen',
      `${listenHost}:${port}`,
      ...(this.cfg.remoteRunDir
        ? ['--run-dir', this.cfg.remoteRunDir, '--name', `worker-${slotName(slot).replace(/[^A-Za-z0-9._-]/g, '_')}`]
        : []),
      ...(this.cfg.remoteDataDir ? ['--data-dir', this.cfg.remoteDataDir] : []),
      ...toArgs(this.opts, REMOTE_WORKER_KEYS),
    ];
    const script = workerScript({
      ringtrain: this.cfg.remoteRingtrain,
      args,
      advertise,
      networkInterface: this.cfg.networkInterface,
    });
    return renderLauncherCommand(template, {
      host: slot.host,
      slot: slot.slot,
      script,
      sshPort: this.cfg.sshPort,
      sshIdentity: this.cfg.sshIdentity,
    });
  }

  private startWorker(slot: WorkerSlot): void {
    // The transports get no token in their environment: it travels on their stdin only.
    const env = { ...process.env };
    delete env[TOKEN_ENV];
    const worker = new RemoteWorker({
      slot,
      commandLine: this.commandLine(slot),
      token: this.token,
      env,
      stdout: (t) => process.stdout.write(t),
      stderr: (t) => process.stderr.write(t),
    });
    this.workers.set(worker.name, worker);
    say(`started worker ${worker.name}`);
    void worker.exited.then((code) => this.onWorkerExit(worker, code));
  }

  private stopWorker(slot: WorkerSlot, reason: string): void {
    const worker = this.workers.get(slotName(slot));
    if (!worker || worker.stopRequested) return;
    say(`stopping worker ${worker.name}: ${reason}`);
    worker.stop();
    setTimeout(() => worker.kill(), this.cfg.shutdownGraceMs).unref();
  }

  private onWorkerExit(worker: RemoteWorker, code: number): void {
    if (this.workers.get(worker.name) === worker) this.workers.delete(worker.name);
    if (code === 0) {
      // A worker ends well only when the coordinator stopped it at the end of the run: place no more workers.
      this.runOver = true;
      this.blacklist.recordSuccess(worker.slot.host);
      return say(`worker ${worker.name} exited`);
    }
    if (this.ending || this.runOver || worker.stopRequested)
      return say(`worker ${worker.name} stopped (exit code ${code})`);
    say(`worker ${worker.name} failed (exit code ${code})`);
    if (this.poller) return this.onDiscoveredWorkerFailed(worker);
    // Fixed hosts: nothing replaces a failed worker. Too few left and the coordinator would wait forever, so end the
    // run, but give the coordinator its liveness window first: when it ends the run itself (a failed run stops every
    // worker with exit code 1), that is no failure of the hosts.
    if (this.workers.size < this.cfg.minWorkers) {
      setTimeout(() => {
        if (this.workers.size < this.cfg.minWorkers && this.coordinator.exitCode === null && !this.runOver) {
          this.abort(
            `${this.workers.size} worker(s) left, fewer than --min-workers ${this.cfg.minWorkers}; stopping the run`,
          );
        }
      }, this.cfg.failureSettleMs).unref();
    }
  }

  /** Ctrl-C or SIGTERM: the coordinator stops the workers; their exits are not failures. */
  interrupt(): void {
    this.runOver = true;
  }

  private onDiscoveredWorkerFailed(worker: RemoteWorker): void {
    const until = this.blacklist.recordFailure(worker.slot.host, Date.now());
    if (until === undefined) return;
    say(
      `host ${worker.slot.host} blacklisted until ${new Date(until).toISOString()} after ${this.cfg.hostFailureLimit} failure(s)`,
    );
    this.place();
  }

  private abort(reason: string): void {
    if (this.failure) return;
    this.failure = reason;
    say(reason);
    if (this.coordinator.exitCode === null) this.coordinator.kill('SIGTERM');
  }

  /**
   * After the coordinator exited: workers it stopped end by themselves; the others (cut off, stalled) are asked
   * to stop, then killed.
   */
  async shutdown(): Promise<void> {
    this.ending = true;
    this.poller?.stop();
    const grace = this.cfg.shutdownGraceMs;
    await waitWithin(
      [...this.workers.values()].map((w) => w.exited),
      grace,
    );
    const left = [...this.workers.values()];
    for (const w of left) {
      say(`stopping worker ${w.name}: still running after the coordinator ended`);
      w.stop();
    }
    await waitWithin(
      left.map((w) => w.exited),
      Math.min(grace, 5_000),
    );
    this.killAll();
    await waitWithin(
      left.map((w) => w.exited),
      2_000,
    );
  }

  killAll(): void {
    this.ending = true;
    this.poller?.stop();
    for (const w of this.workers.values()) w.kill();
  }
}

function addHostOptions(cmd: Command): Command {
  const D = LAUNCH_DEFAULTS;
  return cmd
    .option('-H, --hosts <list>', 'run the workers on these hosts: host:slots[@advertise],... (e.g. a:4,b:4)')
    .option('--hostfile <file>', 'hosts from a file, one per line: host slots=N [advertise=ADDR]')
    .option(
      '--host-discovery-script <path>',
      'elastic: an executable printing the available hosts as host:slots lines, polled',
    )
    .option(
      '--discovery-interval-ms <ms>',
      'how often the discovery script runs',
      intOption('--discovery-interval-ms'),
      D.discoveryIntervalMs,
    )
    .option(
      '--discovery-timeout-ms <ms>',
      'a discovery run taking longer fails (the previous host list stays)',
      intOption('--discovery-timeout-ms'),
      D.discoveryTimeoutMs,
    )
    .option(
      '--host-failure-limit <n>',
      'discovery: worker failures on a host before it is blacklisted',
      intOption('--host-failure-limit'),
      D.hostFailureLimit,
    )
    .option(
      '--blacklist-cooldown-ms <ms>',
      'discovery: a blacklisted host returns after this long (doubling on each repeat, at most 8x)',
      intOption('--blacklist-cooldown-ms'),
      D.blacklistCooldownMs,
    )
    .option(
      '--launcher-command <template>',
      'how a worker is started on a host; placeholders {host} {slot} {command} {shell_command} {ssh_args}',
      DEFAULT_LAUNCHER_COMMAND,
    )
    .option('--ssh-port <port>', 'ssh port of the hosts ({ssh_args})', intOption('--ssh-port'))
    .option('--ssh-identity <file>', 'ssh private key for the hosts ({ssh_args})')
    .option(
      '--network-interface <name>',
      'the interface whose address workers advertise (looked up on each host) and the coordinator is dialed at',
    )
    .option(
      '--coordinator-address <address>',
      "the address workers dial the coordinator at (default: --network-interface's, else this hostname)",
    )
    .option(
      '--remote-ringtrain <command>',
      'shell command that runs ringtrain on the hosts (default: node <this dist/scripts/ringtrain.js>)',
    )
    .option(
      '--remote-run-dir <dir>',
      "folder on each host for the workers' JSON logs (default: none; their output streams here)",
    )
    .option('--remote-data-dir <dir>', 'MNIST IDX files on each host (default: the coordinator sends the samples)')
    .option(
      '--worker-port <port>',
      'ring port of slot 0 on each host, slot k uses port+k (0 = any free port)',
      intOption('--worker-port'),
      0,
    )
    .option(
      '--shutdown-grace-ms <ms>',
      'after the run, time workers get to exit before they are stopped and killed',
      intOption('--shutdown-grace-ms'),
      D.shutdownGraceMs,
    );
}

export function launchCommand(): Command {
  const cmd = new Command('launch').description(
    'start a coordinator and workers: N local ones (-np N, like horovodrun), or on hosts over ssh (-H, --hostfile, --host-discovery-script)',
  );
  cmd.option('-n, --np <n>', 'number of worker processes (with hosts: default every slot)', intOption('-np'));
  addCoordinatorOptions(addTrainOptions(cmd));
  addBackendOptions(cmd);
  addDataDirOption(cmd);
  addOutputOptions(cmd);
  addHostOptions(cmd);
  cmd
    .option(
      '--stall-warn-ms <ms>',
      'workers warn when a step waits on a ring peer this long',
      intOption('--stall-warn-ms'),
      WORKER_DEFAULTS.stallWarnMs,
    )
    .option(
      '--coordinator-retry-ms <ms>',
      'workers keep reconnecting to a lost coordinator this long',
      intOption('--coordinator-retry-ms'),
      WORKER_DEFAULTS.coordinatorRetryMs,
    )
    .option(
      '--ring-timeout <ms>',
      'time allowed to set up the ring links',
      intOption('--ring-timeout'),
      WORKER_DEFAULTS.ringConnectTimeoutMs,
    );
  // The launcher picks a free port unless told otherwise.
  cmd.setOptionValueWithSource('port', 0, 'default');
  cmd.action(async (opts: Record<string, unknown>) => {
    const explicit = new Set(
      cmd.options.map((o) => o.attributeName()).filter((k) => cmd.getOptionValueSource(k) === 'cli'),
    );
    process.exitCode = await launch(opts, explicit);
  });
  return cmd;
}
