/**
 * RingTransport across an abandoned ring. When the coordinator is lost, workers abandon their ring; a restarted
 * coordinator numbers its generations afresh, so the next ring can carry the same generation number as the abandoned
 * one. A predecessor that is quicker to get its new assignment dials before this worker has processed its own: that
 * hello must be held for the new ring, not adopted into the dead one (and then closed by the next connect(), leaving
 * the new ring waiting forever for a link that was refused).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { authAnswer } from '../shared/auth.js';
import { createRootLogger } from '../shared/log.js';
import { encodeChunkFrame, encodeMessage, PROTOCOL_VERSION, Phase } from '../shared/wire/protocol.js';
import { RingTransport, type RingAssignment } from '../worker/ring-transport.js';
import { challengeOf, probe, type Probe } from './helpers/probe.js';
import { tempDir, TEST_TOKEN } from './helpers/procs.js';

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
