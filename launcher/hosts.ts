/**
 * Host lists for `ringtrain launch`, in the spellings users know from horovodrun and MPI:
 *
 *   -H a:4,b:4                 host a with 4 worker slots, host b with 4
 *   -H a,b:2@10.0.0.2          a with 1 slot; b with 2, its workers advertising 10.0.0.2 to their ring peers
 *                              (the advertise address needs the slot count: `user@b` is an ssh user, not an address)
 *   --hostfile FILE            one host per line: `a slots=4`, `b slots=2 advertise=10.0.0.2`, `# comments`
 *   discovery script output    `host:slots` lines, as elastic Horovod's --host-discovery-script prints them
 *
 * A host is whatever the launcher command reaches it by (an ssh name, `user@name`, an address, a network-namespace
 * name); IPv6 addresses are written in brackets (`[fd00::2]:2`) and stored without them. Pure functions only.
 */
import { ConfigError } from '../shared/errors.js';
import { bracketHost } from '../shared/net.js';

export interface HostSpec {
  host: string;
  slots: number;
  /** The address this host's workers give their ring peers (default: see the launcher). */
  advertise?: string;
}

/** One worker place: slot `slot` (0-based) of `host`. */
export interface WorkerSlot {
  host: string;
  slot: number;
  advertise?: string;
}

/**
 * Names that are safe to hand to any launcher: no whitespace, and no leading '-' (ssh would read `-oProxyCommand=...`
 * as an option). `user@` prefixes, dots, underscores, `%` (IPv6 zones) and `+` are allowed.
 */
const HOST_NAME = /^[A-Za-z0-9_.%+][A-Za-z0-9_.%+@-]*$/;
const IPV6 = /^[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9_.-]+)?$/;
const ADVERTISE = /^(?:\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9_.%:][A-Za-z0-9_.%:-]*)$/;

function checkHost(host: string, where: string): string {
  if (!HOST_NAME.test(host)) throw new ConfigError(`${where}: '${host}' is not a usable host name`);
  return host;
}

function checkSlots(value: string, where: string): number {
  const slots = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(slots) || slots < 1) {
    throw new ConfigError(`${where}: slots must be a positive integer, got '${value}'`);
  }
  return slots;
}

function checkAdvertise(value: string, where: string): string {
  if (!ADVERTISE.test(value)) throw new ConfigError(`${where}: '${value}' is not a usable advertise address`);
  return value.startsWith('[') ? value.slice(1, -1) : value;
}

/** `HOST[:SLOTS][@ADVERTISE]`, with `[IPV6]` allowed for HOST. */
export function parseHostEntry(entry: string, where = '-H'): HostSpec {
  const text = entry.trim();
  if (!text) throw new ConfigError(`${where}: empty host entry`);
  const bracketed = /^\[([^\]]+)\](?::([^@]*))?(?:@(.+))?$/.exec(text);
  if (bracketed) {
    const [, address, slots, advertise] = bracketed;
    if (!IPV6.test(address!)) throw new ConfigError(`${where}: '${address}' is not an IPv6 address`);
    return withAdvertise(
      { host: address!, slots: slots === undefined ? 1 : checkSlots(slots, where) },
      advertise,
      where,
    );
  }
  // An unbracketed host has no ':', so the first one starts the slot count; an '@' after it starts the advertise
  // address (an '@' before it belongs to the host: `user@host`).
  const colon = text.indexOf(':');
  if (colon < 0) return { host: checkHost(text, where), slots: 1 };
  const host = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  const at = rest.indexOf('@');
  const slots = checkSlots(at < 0 ? rest : rest.slice(0, at), where);
  return withAdvertise({ host: checkHost(host, where), slots }, at < 0 ? undefined : rest.slice(at + 1), where);
}

function withAdvertise(spec: HostSpec, advertise: string | undefined, where: string): HostSpec {
  return advertise === undefined ? spec : { ...spec, advertise: checkAdvertise(advertise, where) };
}

function rejectDuplicates(hosts: HostSpec[], where: string): HostSpec[] {
  const seen = new Set<string>();
  for (const h of hosts) {
    if (seen.has(h.host)) throw new ConfigError(`${where}: host '${h.host}' is listed twice`);
    seen.add(h.host);
  }
  return hosts;
}

/** `-H a:4,b:4@10.0.0.2` */
export function parseHostList(list: string): HostSpec[] {
  const entries = list
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new ConfigError('-H: no hosts given');
  return rejectDuplicates(
    entries.map((e) => parseHostEntry(e, '-H')),
    '-H',
  );
}

/** An MPI-style hostfile: `host [slots=N] [advertise=ADDR]` per line; blank lines and `#` comments are ignored. */
export function parseHostfile(text: string, file = 'hostfile'): HostSpec[] {
  const hosts: HostSpec[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const where = `${file}:${i + 1}`;
    const [name, ...fields] = line.split(/\s+/);
    const bracketed = /^\[(.+)\]$/.exec(name!);
    if (bracketed && !IPV6.test(bracketed[1]!))
      throw new ConfigError(`${where}: '${bracketed[1]}' is not an IPv6 address`);
    const host = bracketed ? bracketed[1]! : checkHost(name!, where);
    const spec: HostSpec = { host, slots: 1 };
    for (const field of fields) {
      const m = /^(slots|advertise)=(.+)$/.exec(field);
      if (!m) throw new ConfigError(`${where}: unknown field '${field}' (expected slots=N or advertise=ADDR)`);
      if (m[1] === 'slots') spec.slots = checkSlots(m[2]!, where);
      else spec.advertise = checkAdvertise(m[2]!, where);
    }
    hosts.push(spec);
  });
  if (hosts.length === 0) throw new ConfigError(`${file}: no hosts listed`);
  return rejectDuplicates(hosts, file);
}

/** `host:slots` lines (a discovery script's output); blank lines and `#` comments are ignored. An empty list is valid. */
export function parseHostLines(text: string, where = 'host discovery'): HostSpec[] {
  const hosts = text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean)
    .map((l, i) => parseHostEntry(l, `${where} line ${i + 1}`));
  return rejectDuplicates(hosts, where);
}

export function totalSlots(hosts: readonly HostSpec[]): number {
  return hosts.reduce((sum, h) => sum + h.slots, 0);
}

/** Fill the hosts' slots in order, as horovodrun does: `np` workers (default: every slot). */
export function assignSlots(hosts: readonly HostSpec[], np?: number): WorkerSlot[] {
  const available = totalSlots(hosts);
  const wanted = np ?? available;
  if (wanted > available) throw new ConfigError(`-np ${wanted} is more than the ${available} slot(s) the hosts offer`);
  const out: WorkerSlot[] = [];
  for (const h of hosts) {
    for (let slot = 0; slot < h.slots && out.length < wanted; slot++) {
      out.push(h.advertise === undefined ? { host: h.host, slot } : { host: h.host, slot, advertise: h.advertise });
    }
  }
  return out;
}

/** `host:slot`, the name a worker's output lines and the launcher's messages carry. */
export function slotName(s: Pick<WorkerSlot, 'host' | 'slot'>): string {
  return `${bracketHost(s.host)}:${s.slot}`;
}

/** Hosts that are this machine: the launcher runs their workers directly instead of through ssh. */
export function isLocalHost(host: string, hostname: string): boolean {
  return host === 'localhost' || host === '127.0.0.1' || host === '::1' || host === hostname;
}
