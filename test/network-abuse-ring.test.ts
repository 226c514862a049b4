/**
 * Input from the network never crashes a worker through its ring port. A worker's ring listener (RingTransport, the
 * class startWorker listens with) is fed garbage and hostile handshakes, bad frames on an authenticated predecessor
 * link, and a flood of connections that never authenticate. Each bad link is closed with its documented code and, once
 * authenticated, reported as a lost peer; at the end two listeners that took the abuse still form a ring and exchange
 * gradient chunks.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMISSION_DEFAULTS } from '../shared/admission.js';
import { Phase } from '../shared/wire/protocol.js';
import { authAnswer } from '../shared/auth.js';
import { CLOSE_CODES, type RingtrainError } from '../shared/errors.js';
import { createRootLogger } from '../shared/log.js';
import { encodeMessage, FrameKind, PROTOCOL_VERSION } from '../shared/wire/protocol.js';
import { RingTransport } from '../worker/ring-transport.js';
import {
  chunk,
  expectClose,
  hello,
  justPastHandshakeLimit,
  notHandshakes,
  typesOf,
  type LogLine,
} from './helpers/abuse.js';
import { challengeOf, probe, type Probe } from './helpers/probe.js';
import { readJsonLines, tempDir, TEST_TOKEN, waitUntil } from './helpers/procs.js';

const RING_MAX_PAYLOAD = 1024 * 1024;
const FLOOD = 200;

describe("a worker's ring listener under network abuse", { timeout: 60_000 }, () => {
  let dir: string;
  let victim: RingTransport;
  let peer: RingTransport;
  let victimUrl: string;
  let peerPort: number;
  const lost: RingtrainError[] = [];

  const ring = (name: string) =>
    new RingTransport({
      host: '127.0.0.1',
      port: 0,
      token: TEST_TOKEN,
      maxPayloadBytes: RING_MAX_PAYLOAD,
      connectTimeoutMs: 10_000,
      heartbeatMs: 1_000,
      heartbeatMisses: 5,
      stallWarnMs: 60_000,
      log: createRootLogger({ runDir: dir, name, consoleLevel: 'silent' }),
    });

  before(async () => {
    dir = await tempDir('ring-abuse');
    victim = ring('victim');
    peer = ring('peer');
    victimUrl = `ws://127.0.0.1:${await victim.listen()}/`;
    peerPort = await peer.listen();
    victim.onPeerLost((err) => lost.push(err));
  });

  after(async () => {
    await victim?.close();
    await peer?.close();
  });

  /**
   * Give the victim generation `gen` (rank 1 of 2, the peer as successor) and dial it as its predecessor with a valid
   * ringHello: the raw client becomes the victim's authenticated inbound link.
   */
  async function adoptedPredecessor(gen: number): Promise<Probe> {
    const connected = victim.connect({
      gen,
      rank: 1,
      worldSize: 2,
      successor: { host: '127.0.0.1', port: peerPort, rank: 0 },
      predecessorRank: 0,
    });
    const p = probe(victimUrl);
    const nonce = await challengeOf(p);
    p.ws.send(
      encodeMessage({
        type: 'ringHello',
        gen,
        rank: 0,
        protocolVersion: PROTOCOL_VERSION,
        auth: authAnswer(TEST_TOKEN, 'ring', nonce),
      }),
    );
    await connected;
    return p;
  }

  test('anything but a ringHello with the right proof is refused with 1008; an oversized frame with 1009', async () => {
    const cases: Array<[string, (nonce: Uint8Array) => Uint8Array | string]> = [
      ...notHandshakes().map(([label, frame]): [string, () => Uint8Array | string] => [label, () => frame]),
      ['a control hello with the right proof', (nonce) => encodeMessage(hello(authAnswer(TEST_TOKEN, 'ring', nonce)))],
      [
        'a ringHello with a wrong token',
        (nonce) =>
          encodeMessage({
            type: 'ringHello',
            gen: 1,
            rank: 0,
            protocolVersion: 1,
            auth: authAnswer('not-the-token', 'ring', nonce),
          }),
      ],
    ];
    for (const [label, frame] of cases) {
      const p = probe(victimUrl);
      p.ws.send(frame(await challengeOf(p)));
      await expectClose(p, CLOSE_CODES.policyViolation, label);
      assert.deepEqual(typesOf(p), ['challenge'], label);
    }
    const oversized = [justPastHandshakeLimit(), Buffer.alloc(RING_MAX_PAYLOAD + 1)];
    for (const bytes of oversized) {
      const big = probe(victimUrl);
      await challengeOf(big);
      big.ws.send(bytes);
      await expectClose(big, CLOSE_CODES.tooBig, `${bytes.byteLength} bytes before authentication`);
    }

    const refusals = (await readJsonLines<LogLine>(path.join(dir, 'victim.log.jsonl'))).filter(
      (l) => l.msg === 'refused a link',
    );
    assert.equal(refusals.length, cases.length + oversized.length, 'one log line per refused link');
  });

  test('on an authenticated predecessor link, bad frames close that link (1002, 4001, 1009) and report the peer lost', async () => {
    const cases: Array<[string, (gen: number) => Uint8Array | string, number]> = [
      [
        'a chunk header with phase 7',
        () => Uint8Array.from([FrameKind.chunk, PROTOCOL_VERSION, 7, 0, ...new Array<number>(16).fill(0)]),
        CLOSE_CODES.protocolError,
      ],
      ['a truncated chunk', (gen) => chunk(gen, [1, 2, 3]).subarray(0, 26), CLOSE_CODES.protocolError],
      [
        "a control message ('ready') on the ring",
        (gen) =>
          encodeMessage({ type: 'ready', gen, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
        CLOSE_CODES.protocolError,
      ],
      [
        'random bytes behind a valid prefix',
        () => Buffer.concat([Buffer.from([FrameKind.control, PROTOCOL_VERSION]), randomBytes(40)]),
        CLOSE_CODES.protocolError,
      ],
      ['a text frame (its first bytes read as another protocol version)', () => 'garbage', CLOSE_CODES.versionMismatch],
      ['an oversized frame', () => Buffer.alloc(RING_MAX_PAYLOAD + 1), CLOSE_CODES.tooBig],
    ];
    let gen = 1;
    for (const [label, frame, code] of cases) {
      gen++;
      const p = await adoptedPredecessor(gen);
      p.ws.send(frame(gen));
      await expectClose(p, code, label);
      assert.deepEqual(typesOf(p), ['challenge'], `${label}: the predecessor link carries nothing back`);
      // The victim's side of the close completes on its own schedule; the loss must be reported before the next ring.
      await waitUntil(() => lost.length === gen - 1, `${label}: the lost predecessor reported`, 10_000);
      assert.match(lost.at(-1)!.message, /predecessor rank 0/);
    }
    assert.equal(lost.length, cases.length, 'each lost predecessor link was reported once');

    // Fenced and duplicated frames: a frame of another generation is dropped, a duplicate is a protocol error.
    gen++;
    const p = await adoptedPredecessor(gen);
    p.ws.send(chunk(gen - 1, [1])); // an old generation's frame: ignored
    p.ws.send(chunk(gen, [2]));
    p.ws.send(chunk(gen, [2])); // the same key twice
    await expectClose(p, CLOSE_CODES.protocolError, 'a duplicate chunk');
    await waitUntil(() => lost.length === cases.length + 1, 'the lost predecessor reported', 10_000);
  });

  test(`a flood of ${FLOOD} unauthenticated connections: ${ADMISSION_DEFAULTS.maxPending} challenged, the rest refused at once; slots come back`, async () => {
    const flood = Array.from({ length: FLOOD }, () => probe(victimUrl));
    const challenged: Probe[] = [];
    await Promise.all(
      flood.map((p) =>
        p.message(0).then(
          () => challenged.push(p),
          () => undefined,
        ),
      ),
    );
    const turnedAway = flood.filter((p) => !challenged.includes(p));
    assert.equal(challenged.length, ADMISSION_DEFAULTS.maxPending);
    for (const p of turnedAway) assert.equal((await p.closed).code, CLOSE_CODES.tryAgainLater, 'busy, not refused');
    // The flooder gives up: closing its links frees their slots without waiting for the auth timeout.
    for (const p of challenged) p.ws.close();
    await Promise.all(challenged.map((p) => p.closed));
    const next = probe(victimUrl);
    await challengeOf(next);
    next.ws.close();
    await next.closed;
  });

  test('after all that, the two listeners still form a ring and exchange gradient chunks', async () => {
    const gen = 100;
    await Promise.all([
      victim.connect({
        gen,
        rank: 1,
        worldSize: 2,
        successor: { host: '127.0.0.1', port: peerPort, rank: 0 },
        predecessorRank: 0,
      }),
      peer.connect({
        gen,
        rank: 0,
        worldSize: 2,
        successor: { host: '127.0.0.1', port: Number(new URL(victimUrl).port), rank: 1 },
        predecessorRank: 1,
      }),
    ]);
    const header = { generation: gen, step: 0, phase: Phase.reduceScatter, chunk: 0 } as const;
    peer.send({ ...header, count: 3 }, new Float32Array([1.5, -2, 3]));
    victim.send({ ...header, chunk: 1, count: 2 }, new Float32Array([7, 8]));
    assert.deepEqual(Array.from(await victim.receive(header)), [1.5, -2, 3]);
    assert.deepEqual(Array.from(await peer.receive({ ...header, chunk: 1 })), [7, 8]);
  });
});
