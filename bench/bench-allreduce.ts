#!/usr/bin/env node
/**
 * Allreduce benchmark, as nccl-tests measure it, next to the raw throughput of one WebSocket link on the same machine.
 *
 * - Link: one process sends binary messages of each size back to back over one `ws` connection (the ring links'
 *   settings: no compression, Nagle off, an all-zero mask) to a second process that counts them; one-way MB/s.
 * - Allreduce: N real processes, each with the workers' RingTransport (listener, authenticated links to both ring
 *   neighbours), run `ringAllreduce` (average) on a Float32Array of each size, without tfjs. For every size: a barrier,
 *   then `iterations` allreduces back to back; the slowest rank's time per allreduce counts. Every size is repeated
 *   `rounds` times and the median reported. Before timing, each size is checked: exact expected values on every rank
 *   (small integers, exactly representable in float16 too) and bitwise-identical buffers across ranks.
 *
 * algbw = bytes / time; busbw = algbw * 2(n-1)/n (the bytes each rank must send and receive per allreduce, relative to
 * the buffer), comparable to a link's bandwidth whatever n.
 *
 *   npm run build && node dist/bench/bench-allreduce.js [--workers 2,3,4] [--sizes 4K,64K,1M,4M,16M,64M]
 *     [--rounds 3] [--budget-mb 256] [--compression none|fp16] [--segment-bytes N] [--json FILE]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import WebSocket, { WebSocketServer } from 'ws';
import { generateToken } from '../shared/auth.js';
import { ringAllreduce, type AllreduceOptions, type RingLinks } from '../shared/ring/allreduce.js';
import { silentLogger } from '../shared/log.js';
import { RingTransport, type RingAssignment } from '../worker/ring-transport.js';

const SELF = fileURLToPath(import.meta.url);
const MiB = 1024 * 1024;
const MAX_PAYLOAD = 256 * MiB;

export const DEFAULT_SIZES = [4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024, MiB, 4 * MiB, 16 * MiB, 64 * MiB];

export type Compression = 'none' | 'fp16';

export interface AllreduceBenchOptions {
  workers: number[];
  sizes: number[];
  /** Repetitions of every measurement; the median is reported. */
  rounds: number;
  /** Bytes to move per round and size (sets the iteration count: budget / size, at least 2). */
  budgetBytes: number;
  compression: Compression;
  /** Pipelining segment size passed to the allreduce (undefined = its default). */
  segmentBytes?: number;
  /** A/B switches for measuring single optimizations: send through copies instead of prepared frames; Nagle on. */
  noPrepare?: boolean;
  nagle?: boolean;
}

export interface LinkRow {
  bytes: number;
  messages: number;
  /** One way: one process sends, the other receives (median over rounds). */
  mbPerSec: number;
  roundsMbPerSec: number[];
  /** Both ways at once, per direction: each process sends and receives, as every rank of a ring does. */
  duplexMbPerSec: number;
}

export interface AllreduceRow {
  workers: number;
  bytes: number;
  iterations: number;
  /** Median over rounds of the slowest rank's mean time per allreduce. */
  ms: number;
  algbwMbPerSec: number;
  busbwMbPerSec: number;
  /** The link's one-way MB/s for messages of this size, from the same run (NaN if not measured). */
  linkMbPerSec: number;
  /** busbw / link. */
  ratio: number;
  /** The link's per-direction MB/s when both ways carry data at once (what each ring link does), and busbw / that. */
  linkDuplexMbPerSec: number;
  ratioDuplex: number;
  verified: boolean;
  /** Median over ranks of CPU time / wall time while timed (1 = a core fully busy). */
  cpuPerRank: number;
  /** Median over ranks of minor page faults per MiB of buffer reduced (fresh memory being touched). */
  faultsPerMiB: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function iterationsFor(bytes: number, budgetBytes: number): number {
  return Math.max(2, Math.min(2000, Math.round(budgetBytes / bytes)));
}

/** Megabytes (10^6 bytes) per second. */
function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

export function busBandwidth(algbw: number, workers: number): number {
  return (algbw * 2 * (workers - 1)) / workers;
}

export function formatBytes(bytes: number): string {
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KB`;
  return `${bytes} B`;
}

export function parseSize(text: string): number {
  if (/^inf(inity)?$/i.test(text.trim())) return Infinity;
  const m = /^(\d+)\s*([KMG]?)B?$/i.exec(text.trim());
  if (!m) throw new Error(`not a size: '${text}' (examples: 4096, 4K, 16M)`);
  const unit = { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * unit;
}

// ---------------------------------------------------------------------------------------------------------------
// Parent side: child processes driven over IPC

type ChildMessage = { type: string; [key: string]: unknown };

interface Child {
  proc: ChildProcess;
  next(type: string): Promise<ChildMessage>;
}

function spawnChild(role: string): Child {
  const proc = fork(SELF, ['--child', role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: process.env });
  const queue: ChildMessage[] = [];
  let waiter: { type: string; resolve: (m: ChildMessage) => void; reject: (e: Error) => void } | undefined;
  const deliver = () => {
    if (!waiter) return;
    const index = queue.findIndex((m) => m.type === waiter!.type || m.type === 'error');
    if (index < 0) return;
    const [m] = queue.splice(index, 1);
    const w = waiter;
    waiter = undefined;
    if (m!.type === 'error') w.reject(new Error(`${role} child failed: ${String(m!.message)}`));
    else w.resolve(m!);
  };
  proc.on('message', (m: ChildMessage) => {
    queue.push(m);
    deliver();
  });
  proc.once('exit', (code) => {
    queue.push({ type: 'error', message: `exited with code ${code}` });
    deliver();
  });
  return {
    proc,
    next: (type) =>
      new Promise((resolve, reject) => {
        waiter = { type, resolve, reject };
        deliver();
      }),
  };
}

async function stopChildren(children: Child[]): Promise<void> {
  await Promise.all(
    children.map(async (c) => {
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => c.proc.once('exit', () => resolve()));
      c.proc.send({ type: 'close' });
      const timer = setTimeout(() => c.proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }),
  );
}

/** One-way throughput of a single ws link between two processes, for every size. */
export async function benchLink(
  opts: Pick<AllreduceBenchOptions, 'sizes' | 'rounds' | 'budgetBytes'>,
): Promise<LinkRow[]> {
  const server = spawnChild('link-server');
  const client = spawnChild('link-client');
  try {
    const { port } = await server.next('port');
    client.proc.send({ type: 'run', port, sizes: opts.sizes, rounds: opts.rounds, budgetBytes: opts.budgetBytes });
    const { rows } = await client.next('results');
    return rows as LinkRow[];
  } finally {
    await stopChildren([client, server]);
  }
}

/** Allreduce timings for one world size, every size. */
async function benchRing(
  n: number,
  opts: AllreduceBenchOptions,
): Promise<Omit<AllreduceRow, 'linkMbPerSec' | 'ratio' | 'linkDuplexMbPerSec' | 'ratioDuplex'>[]> {
  const token = generateToken();
  const children = Array.from({ length: n }, () => spawnChild('rank'));
  try {
    for (const c of children) c.proc.send({ type: 'listen', token });
    const ports = await Promise.all(children.map(async (c) => Number((await c.next('port')).port)));
    children.forEach((c, rank) => {
      const next = (rank + 1) % n;
      const assignment: RingAssignment = {
        gen: 1,
        rank,
        worldSize: n,
        predecessorRank: (rank + n - 1) % n,
        successor: { host: '127.0.0.1', port: ports[next]!, rank: next },
      };
      c.proc.send({ type: 'connect', assignment });
    });
    await Promise.all(children.map((c) => c.next('connected')));
    for (const c of children) {
      c.proc.send({
        type: 'run',
        sizes: opts.sizes,
        rounds: opts.rounds,
        budgetBytes: opts.budgetBytes,
        compression: opts.compression,
        segmentBytes: opts.segmentBytes,
        noPrepare: opts.noPrepare,
        nagle: opts.nagle,
      });
    }
    const results = await Promise.all(children.map(async (c) => (await c.next('results')).rows as RankResult[]));
    return opts.sizes.map((bytes, i) => {
      const perRank = results.map((r) => r[i]!);
      const rounds = perRank[0]!.roundMs.map((_, round) => Math.max(...perRank.map((r) => r.roundMs[round]!)));
      const iterations = perRank[0]!.iterations;
      const ms = median(rounds) / iterations;
      const algbw = mbps(bytes, ms);
      const identical = new Set(perRank.map((r) => r.hash)).size === 1;
      return {
        workers: n,
        bytes,
        iterations,
        ms,
        algbwMbPerSec: algbw,
        busbwMbPerSec: busBandwidth(algbw, n),
        verified: identical && perRank.every((r) => r.exact),
        cpuPerRank: median(perRank.map((r) => r.cpu)),
        faultsPerMiB: median(perRank.map((r) => r.faultsPerMiB)),
      };
    });
  } finally {
    await stopChildren(children);
  }
}

export async function benchAllreduce(opts: AllreduceBenchOptions, link?: LinkRow[]): Promise<AllreduceRow[]> {
  const rows: AllreduceRow[] = [];
  for (const n of opts.workers) {
    for (const row of await benchRing(n, opts)) {
      const same = link?.find((l) => l.bytes === row.bytes);
      const linkMbPerSec = same?.mbPerSec ?? NaN;
      const linkDuplexMbPerSec = same?.duplexMbPerSec ?? NaN;
      rows.push({
        ...row,
        linkMbPerSec,
        ratio: row.busbwMbPerSec / linkMbPerSec,
        linkDuplexMbPerSec,
        ratioDuplex: row.busbwMbPerSec / linkDuplexMbPerSec,
      });
    }
  }
  return rows;
}

export function formatLink(rows: LinkRow[]): string {
  const head = '| message | MB/s one way | MB/s per direction, both ways at once |\n|---:|---:|---:|';
  return [
    head,
    ...rows.map((r) => `| ${formatBytes(r.bytes)} | ${r.mbPerSec.toFixed(0)} | ${r.duplexMbPerSec.toFixed(0)} |`),
  ].join('\n');
}

function percent(ratio: number): string {
  return Number.isFinite(ratio) ? `${(100 * ratio).toFixed(0)}%` : 'n/a';
}

export function formatAllreduce(rows: AllreduceRow[]): string {
  const head =
    '| workers | size | time | algbw MB/s | busbw MB/s | link one way MB/s | busbw / link | link both ways MB/s | busbw / both ways | CPU per rank |\n' +
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
  const body = rows.map((r) => {
    const time = r.ms >= 1 ? `${r.ms.toFixed(2)} ms` : `${(r.ms * 1000).toFixed(0)} µs`;
    return (
      `| ${r.workers} | ${formatBytes(r.bytes)} | ${time} | ${r.algbwMbPerSec.toFixed(0)} | ${r.busbwMbPerSec.toFixed(0)}${r.verified ? '' : ' (WRONG RESULT)'} | ` +
      `${r.linkMbPerSec.toFixed(0)} | ${percent(r.ratio)} | ${r.linkDuplexMbPerSec.toFixed(0)} | ${percent(r.ratioDuplex)} | ${(100 * r.cpuPerRank).toFixed(0)}% |`
    );
  });
  return [head, ...body].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Child side

interface RankResult {
  bytes: number;
  iterations: number;
  roundMs: number[];
  exact: boolean;
  hash: string;
  /** CPU time over wall time during the timed rounds (1 = one core busy), and minor page faults per MiB reduced. */
  cpu: number;
  faultsPerMiB: number;
}

function send(message: ChildMessage): void {
  process.send!(message);
}

/** Fill with small integers that every rank can sum exactly (float16 too): rank r holds (r + 1) * (i % 5 + 1). */
function fillInput(buffer: Float32Array, rank: number): void {
  for (let i = 0; i < buffer.length; i++) buffer[i] = (rank + 1) * ((i % 5) + 1);
}

/** The average over n ranks of (r + 1) * m is (n + 1) / 2 * m, exact for these small values. */
function isExactAverage(buffer: Float32Array, n: number): boolean {
  for (let i = 0; i < buffer.length; i++) if (buffer[i] !== ((n + 1) / 2) * ((i % 5) + 1)) return false;
  return true;
}

async function runRank(ring: RingTransport, a: RingAssignment, m: ChildMessage): Promise<RankResult[]> {
  const extra = { compression: m.compression, segmentBytes: m.segmentBytes };
  // A/B switches: hide `prepare` (every frame then costs a separate encoding copy), or turn Nagle back on.
  const links: RingLinks = m.noPrepare ? { send: (h, d) => ring.send(h, d), receive: (k) => ring.receive(k) } : ring;
  if (m.nagle) {
    for (const ws of [
      (ring as unknown as { outbound?: WebSocket }).outbound,
      (ring as unknown as { inbound?: WebSocket }).inbound,
    ]) {
      (ws as unknown as { _socket?: { setNoDelay(v: boolean): void } } | undefined)?._socket?.setNoDelay(false);
    }
  }
  let step = 0;
  const allreduce = (buffer: Float32Array) =>
    ringAllreduce(buffer, {
      rank: a.rank,
      worldSize: a.worldSize,
      generation: a.gen,
      step: step++,
      links,
      average: true,
      ...extra,
    } as AllreduceOptions);
  const barrier = new Float32Array(1);
  const rows: RankResult[] = [];
  for (const bytes of m.sizes as number[]) {
    const buffer = new Float32Array(bytes / 4);
    fillInput(buffer, a.rank);
    await allreduce(buffer);
    const exact = isExactAverage(buffer, a.worldSize);
    const iterations = iterationsFor(bytes, Number(m.budgetBytes));
    const roundMs: number[] = [];
    const cpuBefore = process.cpuUsage();
    const faultsBefore = process.resourceUsage().minorPageFault;
    for (let round = 0; round < Number(m.rounds); round++) {
      await allreduce(barrier);
      const started = performance.now();
      for (let i = 0; i < iterations; i++) await allreduce(buffer);
      roundMs.push(performance.now() - started);
    }
    const cpuUsed = process.cpuUsage(cpuBefore);
    const faults = process.resourceUsage().minorPageFault - faultsBefore;
    const cpu = (cpuUsed.user + cpuUsed.system) / 1000 / roundMs.reduce((a, b) => a + b, 0);
    const hash = createHash('sha256').update(new Uint8Array(buffer.buffer)).digest('hex');
    rows.push({
      bytes,
      iterations,
      roundMs,
      exact,
      hash,
      cpu,
      faultsPerMiB: faults / ((bytes * iterations * roundMs.length) / MiB),
    });
  }
  return rows;
}

async function rankChild(): Promise<void> {
  let ring: RingTransport | undefined;
  let assignment: RingAssignment | undefined;
  process.on('message', (m: ChildMessage) => {
    const work = async () => {
      switch (m.type) {
        case 'listen':
          ring = new RingTransport({
            host: '127.0.0.1',
            port: 0,
            token: String(m.token),
            maxPayloadBytes: MAX_PAYLOAD,
            connectTimeoutMs: 30_000,
            heartbeatMs: 1_000,
            heartbeatMisses: 30,
            stallWarnMs: 60_000,
            log: silentLogger(),
          });
          return send({ type: 'port', port: await ring.listen() });
        case 'connect':
          assignment = m.assignment as RingAssignment;
          await ring!.connect(assignment);
          return send({ type: 'connected' });
        case 'run':
          return send({ type: 'results', rows: await runRank(ring!, assignment!, m) });
        case 'close':
          await ring?.close();
          process.exit(0);
      }
    };
    work().catch((err: unknown) => {
      send({ type: 'error', message: String((err as Error)?.stack ?? err) });
      process.exit(1);
    });
  });
}

/**
 * Send `count` messages of one reused buffer, keeping a window in flight (the socket never runs dry); resolves when ws
 * has written them all.
 */
function pumpMessages(ws: WebSocket, bytes: number, count: number): Promise<void> {
  const payload = Buffer.alloc(bytes, 0x5a);
  const window = Math.max(2 * bytes, 4 * MiB);
  return new Promise<void>((resolve, reject) => {
    let inFlight = 0;
    let sent = 0;
    const pump = (): void => {
      while (sent < count && inFlight < window) {
        inFlight += bytes;
        sent++;
        ws.send(payload, { binary: true }, (err) => {
          if (err) return reject(err);
          inFlight -= bytes;
          if (sent === count && inFlight === 0) resolve();
          else pump();
        });
      }
    };
    if (count === 0) resolve();
    else pump();
  });
}

/** Counts binary messages; `expect(n)` resolves once n more have arrived. */
class Counter {
  private received = 0;
  private target = 0;
  private done?: () => void;

  onMessage(): void {
    if (++this.received === this.target) this.done?.();
  }

  expect(count: number): Promise<void> {
    this.received = 0;
    this.target = count;
    return new Promise((resolve) => {
      this.done = resolve;
    });
  }
}

/** The receiving end: counts each round's messages and acks them; in duplex rounds it sends as many back meanwhile. */
async function linkServerChild(): Promise<void> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: MAX_PAYLOAD });
  wss.on('connection', (ws) => {
    const counter = new Counter();
    ws.on('message', (data, isBinary) => {
      if (isBinary) return counter.onMessage();
      const [count, bytes, duplex] = data.toString().split(' ').map(Number);
      const arrived = counter.expect(count!);
      const sent = duplex ? pumpMessages(ws, bytes!, count!) : Promise.resolve();
      void Promise.all([arrived, sent]).then(() => ws.send('done'));
    });
  });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  send({ type: 'port', port: (wss.address() as { port: number }).port });
  process.on('message', (m: ChildMessage) => {
    if (m.type === 'close') wss.close(() => process.exit(0));
  });
}

/** One round: `count` messages one way (or both ways at once), timed until everything arrived; returns ms. */
async function linkRound(
  ws: WebSocket,
  counter: Counter,
  bytes: number,
  count: number,
  duplex: boolean,
): Promise<number> {
  const acked = new Promise<void>((resolve) => ws.once('done', () => resolve()));
  const arrived = duplex ? counter.expect(count) : Promise.resolve();
  const started = performance.now();
  ws.send(`${count} ${bytes} ${duplex ? 1 : 0}`);
  await Promise.all([pumpMessages(ws, bytes, count), arrived, acked]);
  return performance.now() - started;
}

async function linkClientChild(): Promise<void> {
  process.on('message', (m: ChildMessage) => {
    const work = async () => {
      if (m.type === 'close') process.exit(0);
      if (m.type !== 'run') return;
      const ws = new WebSocket(`ws://127.0.0.1:${Number(m.port)}/`, {
        perMessageDeflate: false,
        maxPayload: MAX_PAYLOAD,
        generateMask: (mask) => mask.fill(0),
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      const counter = new Counter();
      ws.on('message', (data, isBinary) => (isBinary ? counter.onMessage() : ws.emit('done')));
      const rows: LinkRow[] = [];
      for (const bytes of m.sizes as number[]) {
        const count = Math.max(4, iterationsFor(bytes, Number(m.budgetBytes)));
        await linkRound(ws, counter, bytes, Math.min(count, 8), false); // warm-up
        const oneWay: number[] = [];
        const duplex: number[] = [];
        for (let round = 0; round < Number(m.rounds); round++) {
          oneWay.push(mbps(bytes * count, await linkRound(ws, counter, bytes, count, false)));
          duplex.push(mbps(bytes * count, await linkRound(ws, counter, bytes, count, true)));
        }
        rows.push({
          bytes,
          messages: count,
          mbPerSec: median(oneWay),
          roundsMbPerSec: oneWay,
          duplexMbPerSec: median(duplex),
        });
      }
      ws.close();
      send({ type: 'results', rows });
    };
    work().catch((err: unknown) => {
      send({ type: 'error', message: String((err as Error)?.stack ?? err) });
      process.exit(1);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = new Command('bench-allreduce')
    .option('--workers <list>', 'world sizes', '2,3,4')
    .option(
      '--sizes <list>',
      'buffer sizes',
      DEFAULT_SIZES.map(formatBytes).join(',').replace(/ /g, '').replace(/B/g, ''),
    )
    .option('--rounds <n>', 'repetitions (median reported)', Number, 3)
    .option('--budget-mb <n>', 'MiB moved per round and size', Number, 256)
    .option('--compression <c>', 'none or fp16', 'none')
    .option('--segment-bytes <n>', 'pipelining segment size', (v: string) => parseSize(v))
    .option('--no-link', 'skip the raw link measurement')
    .option('--no-prepare', 'A/B: send copies instead of filling prepared frames in place')
    .option('--nagle', "A/B: leave Nagle's algorithm on for the ring links", false)
    .option('--json <file>', 'also write the rows as JSON')
    .parse(process.argv)
    .opts();
  const opts: AllreduceBenchOptions = {
    workers: String(o.workers).split(',').map(Number),
    sizes: String(o.sizes).split(',').map(parseSize),
    rounds: o.rounds,
    budgetBytes: o.budgetMb * MiB,
    compression: o.compression === 'fp16' ? 'fp16' : 'none',
    segmentBytes: o.segmentBytes,
    noPrepare: o.prepare === false,
    nagle: Boolean(o.nagle),
  };
  const link = o.link ? await benchLink(opts) : undefined;
  if (link) process.stdout.write(`${formatLink(link)}\n\n`);
  const rows = await benchAllreduce(opts, link);
  process.stdout.write(`${formatAllreduce(rows)}\n`);
  if (o.json) await fs.writeFile(o.json, `${JSON.stringify({ link, allreduce: rows }, null, 2)}\n`);
}

const childRole = process.argv[2] === '--child' ? process.argv[3] : undefined;
if (childRole === 'rank') await rankChild();
else if (childRole === 'link-server') await linkServerChild();
else if (childRole === 'link-client') await linkClientChild();
else if (import.meta.url === `file://${process.argv[1]}`) await main();
