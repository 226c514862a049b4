/**
 * Elastic host discovery for `ringtrain launch --host-discovery-script`, as elastic Horovod's driver does it: the
 * launcher runs the script every --discovery-interval-ms; it prints the hosts available now as `host:slots` lines.
 * New hosts (and new slots) get workers up to --max-workers, vanished hosts have their workers stopped, and a host
 * whose workers keep failing is blacklisted for a cool-down that doubles each time it is blacklisted again.
 *
 * The decisions (planPlacement, HostBlacklist) are pure and take the time as an argument; running the script and
 * the polling loop are the I/O around them.
 */
import { execFile } from 'node:child_process';
import { ConfigError } from '../shared/errors.js';
import { parseHostLines, slotName, type HostSpec, type WorkerSlot } from './hosts.js';

export interface BlacklistOptions {
  /** Consecutive worker failures on one host that blacklist it. */
  failureLimit: number;
  /** Cool-down of a host's first blacklisting; each further one doubles it. */
  cooldownMs: number;
  /** The longest cool-down. */
  maxCooldownMs: number;
}

export const BLACKLIST_DEFAULTS: BlacklistOptions = { failureLimit: 3, cooldownMs: 60_000, maxCooldownMs: 480_000 };

/** Hosts whose workers keep failing, kept out of the placement until their cool-down has passed. */
export class HostBlacklist {
  private readonly failures = new Map<string, number>();
  private readonly until = new Map<string, number>();
  private readonly times = new Map<string, number>();

  constructor(private readonly opts: BlacklistOptions = BLACKLIST_DEFAULTS) {
    if (opts.failureLimit < 1) throw new ConfigError('the host failure limit must be at least 1');
  }

  /** A worker on `host` failed; returns the end of its cool-down when this failure blacklists the host. */
  recordFailure(host: string, now: number): number | undefined {
    if (this.isBlacklisted(host, now)) return undefined;
    const failures = (this.failures.get(host) ?? 0) + 1;
    this.failures.set(host, failures);
    if (failures < this.opts.failureLimit) return undefined;
    const times = (this.times.get(host) ?? 0) + 1;
    this.times.set(host, times);
    const end = now + Math.min(this.opts.maxCooldownMs, this.opts.cooldownMs * 2 ** (times - 1));
    this.until.set(host, end);
    this.failures.delete(host);
    return end;
  }

  /** A worker on `host` ended well: its failures so far were not the host's fault. */
  recordSuccess(host: string): void {
    this.failures.delete(host);
  }

  isBlacklisted(host: string, now: number): boolean {
    const end = this.until.get(host);
    if (end === undefined) return false;
    if (now < end) return true;
    this.until.delete(host);
    return false;
  }

  /** Hosts blacklisted at `now`, with the end of their cool-down. */
  entries(now: number): Array<{ host: string; until: number }> {
    return [...this.until.keys()]
      .filter((h) => this.isBlacklisted(h, now))
      .map((host) => ({ host, until: this.until.get(host)! }));
  }
}

export interface Placement {
  start: WorkerSlot[];
  stop: WorkerSlot[];
}

export interface PlacementOptions {
  /** At most this many workers in all (Infinity = every slot). */
  cap: number;
  /** Hosts to leave out (blacklisted). */
  excluded: (host: string) => boolean;
}

/**
 * The change that turns the running workers into the wanted ones: workers on hosts that vanished or are excluded,
 * or on slots a host no longer offers, stop; free slots of available hosts are filled in the listed order up to
 * the cap. When the cap shrinks below what is running, the workers furthest down the list stop.
 */
export function planPlacement(
  hosts: readonly HostSpec[],
  running: readonly WorkerSlot[],
  opts: PlacementOptions,
): Placement {
  const available = new Map(hosts.filter((h) => !opts.excluded(h.host)).map((h) => [h.host, h]));
  const stop: WorkerSlot[] = [];
  const kept: WorkerSlot[] = [];
  for (const w of running) {
    const host = available.get(w.host);
    (host && w.slot < host.slots ? kept : stop).push(w);
  }
  const order = [...available.keys()];
  kept.sort((a, b) => order.indexOf(a.host) - order.indexOf(b.host) || a.slot - b.slot);
  while (kept.length > opts.cap) stop.push(kept.pop()!);
  const taken = new Set(kept.map(slotName));
  const start: WorkerSlot[] = [];
  for (const h of available.values()) {
    for (let slot = 0; slot < h.slots && kept.length + start.length < opts.cap; slot++) {
      if (taken.has(slotName({ host: h.host, slot }))) continue;
      start.push(h.advertise === undefined ? { host: h.host, slot } : { host: h.host, slot, advertise: h.advertise });
    }
  }
  return { start, stop };
}

/** Run the discovery script (an executable, no arguments) and parse its `host:slots` lines. */
export function runDiscoveryScript(file: string, timeoutMs: number): Promise<HostSpec[]> {
  return new Promise((resolve, reject) => {
    execFile(file, [], { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const detail = err.killed
          ? `timed out after ${timeoutMs} ms`
          : `${err.message.split('\n')[0]}${stderr ? `: ${stderr.trim()}` : ''}`;
        return reject(new ConfigError(`host discovery script ${file} failed: ${detail}`, { cause: err }));
      }
      try {
        resolve(parseHostLines(stdout, `host discovery script ${file}`));
      } catch (parseErr) {
        reject(parseErr);
      }
    });
  });
}

export interface DiscoveryPollerOptions {
  intervalMs: number;
  discover: () => Promise<HostSpec[]>;
  onHosts: (hosts: HostSpec[]) => void;
  /** A failed run: the previous host list stays in force. */
  onError: (err: unknown) => void;
}

/** Runs discovery now and then every interval after the previous run ended (runs never overlap). */
export class DiscoveryPoller {
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly opts: DiscoveryPollerOptions) {}

  start(): void {
    void this.poll();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async poll(): Promise<void> {
    if (this.stopped) return;
    try {
      const hosts = await this.opts.discover();
      if (!this.stopped) this.opts.onHosts(hosts);
    } catch (err) {
      if (!this.stopped) this.opts.onError(err);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.poll(), this.opts.intervalMs);
  }
}
