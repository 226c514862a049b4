/**
 * RingTransport across an abandoned ring. When the coordinator is lost, workers abandon their ring; a restarted
 * coordinator numbers its generations afresh, so the next ring can carry the same generation number as the abandoned
 * one. A predecessor that is quicker to get its new assignment dials before this worker has processed its own: that
 * hello must be held for the new ring, not adopted into the dead one (and then closed by the next connect(), leaving
 * the new ring waiting forever for a link that was refused).
 *
 * Successor dials are retried with backoff within the form timeout and an unreachable successor is reported
 * (`onLinkDown`, sent to the coordinator as `ringLinkDown`), as is an open link that is lost; with TLS options the
 * ring runs over wss:// with the given CA.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { authAnswer } from '../shared/auth.js';
import { createRootLogger } from '../shared/log.js';
import { encodeChunkFrame, encodeMessage, PROTOCOL_VERSION, Phase } from '../shared/wire/protocol.js';
import {
  RingTransport,
  type LinkDown,
  type RingAssignment,
  type RingTransportOptions,
} from '../worker/ring-transport.js';
import { challengeOf, probe, type Probe } from './helpers/probe.js';
import { tempDir, TEST_TOKEN, waitUntil } from './helpers/procs.js';

describe('RingTransport: a ring abandoned and re-formed under the same generation number', { timeout: 30_000 }, () => {
  let worker: RingTransport;
  let successor: RingTransport;
  let url: string;
  let assignment: RingAssignment;
  const links: Probe[] = [];

  before(async () => {
    const dir = await tempDir('ring-transport');
    const ring = (name: string) =>
      new RingTransport({
        host: '127.0.0.1',
        port: 0,
        token: TEST_TOKEN,
        maxPayloadBytes: 1024 * 1024,
        connectTimeoutMs: 3_000,
        heartbeatMs: 1_000,
        heartbeatMisses: 5,
        stallWarnMs: 60_000,
        log: createRootLogger({ runDir: dir, name, consoleLevel: 'silent' }),
      });
    worker = ring('worker');
    successor = ring('successor'); // only listens: the worker's successor link lands there and is held
    url = `ws://127.0.0.1:${await worker.listen()}/`;
    assignment = {
      gen: 1,
      rank: 1,
      worldSize: 2,
      successor: { host: '127.0.0.1', port: await successor.listen(), rank: 0 },
      predecessorRank: 0,
    };
  });

  after(async () => {
    for (const p of links) p.ws.terminate();
    await worker?.close();
    await successor?.close();
  });

  /** Dial the worker as rank 0 of generation 1; resolves once the worker has processed the hello. */
  async function predecessorHello(): Promise<Probe> {
    const p = probe(url);
    links.push(p);
    const nonce = await challengeOf(p);
    p.ws.send(
      encodeMessage({
        type: 'ringHello',
        gen: 1,
        rank: 0,
        protocolVersion: PROTOCOL_VERSION,
        auth: authAnswer(TEST_TOKEN, 'ring', nonce),
      }),
    );
    // ws handles frames in order and the hello's handling is synchronous: the pong proves the hello was processed.
    await new Promise<void>((resolve) => {
      p.ws.once('pong', () => resolve());
      p.ws.ping();
    });
    return p;
  }

  test('a hello that arrives between abandon() and the next connect() is adopted by the new ring', async () => {
    const first = await predecessorHello();
    await worker.connect(assignment);
    worker.abandon('coordinator lost');
    assert.equal((await first.closed).code, 1000, 'the abandoned ring closes its predecessor link');

    const second = await predecessorHello(); // the predecessor already has its new assignment; this worker not yet
    await worker.connect(assignment);

    const header = { generation: 1, step: 0, phase: Phase.reduceScatter, chunk: 0 } as const;
    second.ws.send(encodeChunkFrame({ ...header, count: 2 }, new Float32Array([4, -1])));
    assert.deepEqual(Array.from(await worker.receive(header)), [4, -1], 'the new ring receives over the held link');
  });

  test('after abandon() the transport refuses to send or receive for the abandoned generation', async () => {
    worker.abandon('coordinator lost');
    const header = { generation: 1, step: 1, phase: Phase.reduceScatter, chunk: 0 } as const;
    await assert.rejects(worker.receive(header), { code: 'STEP_ABORTED' });
    assert.throws(() => worker.prepare({ ...header, count: 1 }), { code: 'STEP_ABORTED' });
  });
});

describe('RingTransport: successor dials, link-down reports and TLS', { timeout: 60_000 }, () => {
  let dir: string;
  const open: RingTransport[] = [];
  const ring = (name: string, opts: Partial<RingTransportOptions> = {}) => {
    const t = new RingTransport({
      host: '127.0.0.1',
      port: 0,
      token: TEST_TOKEN,
      maxPayloadBytes: 1024 * 1024,
      connectTimeoutMs: 10_000,
      heartbeatMs: 1_000,
      heartbeatMisses: 5,
      stallWarnMs: 60_000,
      log: createRootLogger({ runDir: dir, name, consoleLevel: 'silent' }),
      ...opts,
    });
    open.push(t);
    return t;
  };
  const pair = (gen: number, port0: number, port1: number): [RingAssignment, RingAssignment] => [
    { gen, rank: 0, worldSize: 2, successor: { host: '127.0.0.1', port: port1, rank: 1 }, predecessorRank: 1 },
    { gen, rank: 1, worldSize: 2, successor: { host: '127.0.0.1', port: port0, rank: 0 }, predecessorRank: 0 },
  ];
  async function exchange(a: RingTransport, b: RingTransport, gen: number): Promise<void> {
    const header = { generation: gen, step: 0, phase: Phase.reduceScatter, chunk: 0 } as const;
    void a.send({ ...header, count: 2 }, new Float32Array([1, 2]));
    void b.send({ ...header, chunk: 1, count: 1 }, new Float32Array([3]));
    assert.deepEqual(Array.from(await b.receive(header)), [1, 2]);
    assert.deepEqual(Array.from(await a.receive({ ...header, chunk: 1 })), [3]);
  }

  before(async () => {
    dir = await tempDir('ring-dial');
  });

  after(async () => {
    for (const t of open) await t.close();
  });

  test('a successor whose listener comes up late is dialed again until it answers', async () => {
    const a = ring('late-a');
    const portA = await a.listen();
    const portB = await freePort();
    const [forA, forB] = pair(1, portA, portB);
    const connecting = a.connect(forA); // nothing listens on portB yet: refused, retried
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const b = ring('late-b', { port: portB });
    await b.listen();
    await Promise.all([connecting, b.connect(forB)]);
    await exchange(a, b, 1);
  });

  test('a successor that never answers is reported as unreachable before the form timeout', async () => {
    const a = ring('unreachable-a', { connectTimeoutMs: 4_000 });
    const downs: LinkDown[] = [];
    a.onLinkDown((d) => downs.push(d));
    const [forA] = pair(1, await a.listen(), await freePort());
    const t0 = performance.now();
    await assert.rejects(a.connect(forA), { code: 'PEER_LOST' });
    assert.ok(performance.now() - t0 < 4_000, 'gave up before the form timeout');
    assert.equal(downs.length, 1);
    assert.equal(downs[0]!.peerRank, 1);
    assert.equal(downs[0]!.during, 'forming');
    assert.ok(downs[0]!.attempts > 3, `retried with backoff: ${downs[0]!.attempts} dials`);
  });

  test('an open link that is lost is reported once, with the peer rank', async () => {
    const a = ring('lost-a');
    const b = ring('lost-b');
    const [forA, forB] = pair(2, await a.listen(), await b.listen());
    await Promise.all([a.connect(forA), b.connect(forB)]);
    const downs: LinkDown[] = [];
    a.onLinkDown((d) => downs.push(d));
    await b.close();
    await waitUntil(() => downs.length === 2, 'both of rank 0 links reported down', 10_000);
    assert.deepEqual(
      downs.map((d) => [d.peerRank, d.during]),
      [
        [1, 'training'],
        [1, 'training'],
      ],
    );
  });

  test('with TLS options the ring runs over wss://, trusting the given CA; a plaintext dialer is not let in', async () => {
    const { cert, key } = selfSigned(dir);
    const tls = { cert, key, ca: cert };
    const a = ring('tls-a', { tls });
    const b = ring('tls-b', { tls });
    const [forA, forB] = pair(3, await a.listen(), await b.listen());
    await Promise.all([a.connect(forA), b.connect(forB)]);
    await exchange(a, b, 3);

    const plain = ring('tls-plain', { connectTimeoutMs: 2_000 });
    const [forPlain] = pair(4, await plain.listen(), forA.successor.port);
    await assert.rejects(plain.connect(forPlain), { code: 'PEER_LOST' });
    const untrusting = ring('tls-untrusting', { connectTimeoutMs: 2_000, tls: { cert, key } });
    const [forUntrusting] = pair(5, await untrusting.listen(), forA.successor.port);
    await assert.rejects(untrusting.connect(forUntrusting), { code: 'PEER_LOST' });
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function selfSigned(dir: string): { cert: string; key: string } {
  const keyFile = path.join(dir, 'ring-key.pem');
  const certFile = path.join(dir, 'ring-cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1'].concat([
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]),
    { stdio: 'ignore' },
  );
  return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
}
