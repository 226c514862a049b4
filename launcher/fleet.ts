/**
 * The workers of a launch: started (directly on this machine, else through the launcher command), watched, restarted
 * or given up, and stopped. Local `-np N` is a host list of one (`localhost:N`), as `horovodrun -np 2` is
 * `-H localhost:2`, so every mode takes this one path.
 *
 * What happens when a worker dies (its exit code or signal is named in the message):
 * - not elastic (--min-workers = the number of workers, the default): the run fails fast, as with horovodrun and
 *   torchrun: the coordinator is stopped, then every worker, and launch exits 1;
 * - elastic (--min-workers below it): the worker is restarted with exponential backoff, at most --max-restarts times
 *   per slot (torchrun's name); one that cannot be restarted is given up, and once fewer than --min-workers are left
 *   the run ends with an error instead of waiting for workers that will never come;
 * - host discovery: the host is blacklisted after repeated failures and the placement follows the host list.
 * A worker exiting with code 0 was stopped by the coordinator at the end of the run; nothing is restarted after that.
 */
import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import { TOKEN_ENV } from '../shared/auth.js';
import { describeExit } from '../shared/exit-codes.js';
import { DiscoveryPoller, HostBlacklist, planPlacement, runDiscoveryScript } from './discovery.js';
import { isLocalHost, slotName, type HostSpec, type WorkerSlot } from './hosts.js';
import { LOCAL_LAUNCHER_COMMAND, RemoteWorker, renderLauncherCommand, shellQuote, workerScript } from './remote.js';

/** Everything the fleet needs, read and checked before any process starts (launch.ts). */
export interface FleetConfig {
  /** Fixed slots (-np, -H, --hostfile); absent with discovery. */
  slots?: WorkerSlot[];
  discoveryScript?: string;
  /** With discovery: the most workers started at the first poll. */
  initialWorkers: number;
  minWorkers: number;
  maxWorkers: number;
  maxRestarts: number;
  /** First restart delay; doubled on each restart of the same slot. */
  restartBackoffMs: number;
  template: string;
  templateGiven: boolean;
  sshPort?: number;
  sshIdentity?: string;
  networkInterface?: string;
  /** `cpus`: pin each worker to its share of its host's CPUs (cpu-binding.ts); `none`: leave it to the scheduler. */
  cpuBinding: 'cpus' | 'none';
  /** The worker's arguments after `worker`, without --coordinator, --listen and --advertise. */
  workerArgs: (slot: WorkerSlot) => string[];
  workerPort: number;
  remoteRingtrain: string;
  shutdownGraceMs: number;
  /** How long a worker's exit with a code (not a signal) may be the coordinator's doing before it is a failure. */
  failureSettleMs: number;
  discoveryIntervalMs: number;
  discoveryTimeoutMs: number;
  hostFailureLimit: number;
  blacklistCooldownMs: number;
}

export function say(line: string): void {
  process.stderr.write(`launch: ${line}\n`);
}

function waitWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([Promise.all(promises).then(() => undefined), timeout]).finally(() => clearTimeout(timer));
}

export class WorkerFleet {
  private readonly workers = new Map<string, RemoteWorker>();
  private readonly restarts = new Map<string, number>();
  private readonly pendingRestarts = new Map<string, NodeJS.Timeout>();
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
    private readonly cfg: FleetConfig,
    private readonly token: string,
    private readonly coordinator: ChildProcess,
  ) {
    this.blacklist = new HostBlacklist({
      failureLimit: cfg.hostFailureLimit,
      cooldownMs: cfg.blacklistCooldownMs,
      maxCooldownMs: 8 * cfg.blacklistCooldownMs,
    });
  }

  private get elastic(): boolean {
    return this.cfg.slots === undefined || this.cfg.minWorkers < this.cfg.slots.length;
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
      ...this.cfg.workerArgs(slot),
    ];
    const script = workerScript({
      ringtrain: this.cfg.remoteRingtrain,
      args,
      advertise,
      networkInterface: this.cfg.networkInterface,
      cpuShare: this.cfg.cpuBinding === 'cpus' ? { index: slot.slot, count: this.workersOn(slot.host) } : undefined,
      // On this machine, the node running launch; elsewhere, the host's own.
      node: local ? shellQuote(process.execPath) : undefined,
    });
    return renderLauncherCommand(template, {
      host: slot.host,
      slot: slot.slot,
      script,
      sshPort: this.cfg.sshPort,
      sshIdentity: this.cfg.sshIdentity,
    });
  }

  /** How many workers share this host's CPUs: the fixed slots placed there, else the slots discovery offers. */
  private workersOn(host: string): number {
    if (this.cfg.slots) return this.cfg.slots.filter((s) => s.host === host).length;
    return this.hosts.find((h) => h.host === host)?.slots ?? 1;
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
      return say(`worker ${worker.name} stopped (${describeExit(code)})`);
    const how = describeExit(code);
    say(`worker ${worker.name} failed (${how})`);
    if (this.poller) return this.onDiscoveredWorkerFailed(worker);
    if (this.elastic) return this.restartOrGiveUp(worker.slot, how);
    // Not elastic: the run cannot go on without this worker. A signal is never the coordinator's doing; an exit code
    // may be (a failed run stops every worker with code 1), so give the coordinator a moment to end the run itself.
    const reason = `worker ${worker.name} failed (${how}) and --min-workers ${this.cfg.minWorkers} needs every worker; stopping the run`;
    if (code > 128) return this.abort(reason);
    setTimeout(() => {
      if (this.coordinator.exitCode === null && !this.runOver) this.abort(reason);
    }, this.cfg.failureSettleMs).unref();
  }

  private restartOrGiveUp(slot: WorkerSlot, how: string): void {
    const name = slotName(slot);
    const done = this.restarts.get(name) ?? 0;
    if (done < this.cfg.maxRestarts) {
      const delay = this.cfg.restartBackoffMs * 2 ** done;
      this.restarts.set(name, done + 1);
      say(`restarting worker ${name} in ${delay} ms (restart ${done + 1} of ${this.cfg.maxRestarts})`);
      const timer = setTimeout(() => {
        this.pendingRestarts.delete(name);
        if (!this.ending && !this.runOver) this.startWorker(slot);
      }, delay);
      this.pendingRestarts.set(name, timer);
      return;
    }
    say(`giving up on worker ${name} after ${done} restart(s) (--max-restarts ${this.cfg.maxRestarts})`);
    const alive = this.workers.size + this.pendingRestarts.size;
    if (alive < this.cfg.minWorkers)
      this.abort(
        `worker ${name} failed (${how}) and cannot be restarted: ${alive} worker(s) left, fewer than --min-workers ${this.cfg.minWorkers}; stopping the run`,
      );
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
    // The workers the coordinator now stops exit non-zero: that is not a failure to answer with restarts.
    this.runOver = true;
    say(reason);
    if (this.coordinator.exitCode === null) this.coordinator.kill('SIGTERM');
  }

  /**
   * After the coordinator exited: workers it stopped end by themselves; the others (cut off, stalled) are asked
   * to stop, then killed.
   */
  async shutdown(): Promise<void> {
    this.stopPlacing();
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

  private stopPlacing(): void {
    this.ending = true;
    this.poller?.stop();
    for (const timer of this.pendingRestarts.values()) clearTimeout(timer);
    this.pendingRestarts.clear();
  }

  killAll(): void {
    this.stopPlacing();
    for (const w of this.workers.values()) w.kill();
  }
}
