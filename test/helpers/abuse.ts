/** Shared pieces of the network-abuse tests: hostile frames, a hello to forge, and close-code assertions. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ADMISSION_DEFAULTS } from '../../shared/admission.js';
import { Phase } from '../../shared/wire/protocol.js';
import {
  decodeMessage,
  encodeChunkFrame,
  encodeMessage,
  FrameKind,
  PROTOCOL_VERSION,
  type MessageOf,
} from '../../shared/wire/protocol.js';
import { controlFrame, type Probe } from './probe.js';

export interface LogLine {
  level: number;
  msg: string;
  link?: string;
}

export function typesOf(p: Probe): string[] {
  return p.received.map((bytes) => decodeMessage(bytes).type);
}

export function hello(auth: Uint8Array, workerId = 'abuser'): MessageOf<'hello'> {
  return {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    workerId,
    host: 'abuser-host',
    ringHost: '127.0.0.1',
    ringPort: 1,
    hasData: false,
    backend: 'cpu',
    auth,
  };
}

export const chunk = (generation: number, values: number[]) =>
  encodeChunkFrame(
    { generation, step: 0, phase: Phase.reduceScatter, chunk: 0, count: values.length },
    new Float32Array(values),
  );

/** Frames that are not a handshake: each must get the link refused. */
export function notHandshakes(): Array<[string, Uint8Array | string]> {
  const validHello = encodeMessage(hello(new Uint8Array(32)));
  return [
    ['random bytes', randomBytes(64)],
    ['an empty frame', new Uint8Array(0)],
    ['a single byte', Uint8Array.of(1)],
    ['a text frame', 'hello, is this the coordinator?'],
    ['a truncated hello', validHello.subarray(0, validHello.length >> 1)],
    ['a hello of protocol version 2', Uint8Array.from([FrameKind.control, 2, ...validHello.subarray(2)])],
    ['a hello with wrong field types', controlFrame({ ...hello(new Uint8Array(32)), ringPort: 'http', hasData: -1.5 })],
    ['a gradient chunk', chunk(1, [1, 2, 3])],
    [
      "a 'ready' instead of the answer",
      encodeMessage({ type: 'ready', gen: 1, rank: 0, step: 0, hasState: false, epoch: 0, consumed: 0, lineage: '' }),
    ],
    [
      "a 'welcome' (the wrong direction)",
      encodeMessage({ type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: 'x', runId: 'y' }),
    ],
  ];
}

/** One byte past the pre-authentication limit: ws itself cuts it off with 1009, whatever the post-auth limit. */
export const justPastHandshakeLimit = (): Uint8Array => new Uint8Array(ADMISSION_DEFAULTS.maxHandshakeBytes + 1);

export async function expectClose(p: Probe, code: number, label: string): Promise<{ code: number; reason: string }> {
  const closed = await p.closed;
  assert.equal(closed.code, code, `${label}: close code (reason '${closed.reason}')`);
  return closed;
}
