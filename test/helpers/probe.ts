/** Raw WebSocket clients for handshake and abuse tests: record every message, expose the close. */
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import WebSocket from 'ws';
import { decodeMessage, FrameKind, PROTOCOL_VERSION } from '../../shared/wire/protocol.js';
import { rawToBytes } from '../../shared/ws-util.js';

export interface Probe {
  ws: WebSocket;
  received: Uint8Array[];
  /** The i-th message received; rejects if the link closes first. */
  message(i: number): Promise<Uint8Array>;
  closed: Promise<{ code: number; reason: string; at: number }>;
}

export function probe(url: string): Probe {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const received: Uint8Array[] = [];
  const wake = new Set<() => void>();
  ws.on('message', (data) => {
    received.push(rawToBytes(data));
    for (const w of [...wake]) w();
  });
  ws.on('error', () => undefined); // surfaces as 'close'
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => {
    ws.once('close', (code, reason) => {
      resolve({ code, reason: reason.toString(), at: performance.now() });
      for (const w of [...wake]) w();
    });
  });
  const message = (i: number) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const check = () => {
        if (received.length > i) {
          wake.delete(check);
          resolve(received[i]!);
        } else if (ws.readyState === WebSocket.CLOSED) {
          wake.delete(check);
          reject(new Error(`link closed before message ${i}`));
        }
      };
      wake.add(check);
      check();
    });
  return { ws, received, message, closed };
}

/** Wait for the challenge and return its nonce. */
export async function challengeOf(p: Probe): Promise<Uint8Array> {
  const m = decodeMessage(await p.message(0));
  assert.equal(m.type, 'challenge');
  if (m.type !== 'challenge') throw new Error('unreachable');
  assert.equal(m.nonce.byteLength, 32);
  return Uint8Array.from(m.nonce);
}

/** A control frame with any body, for messages encodeMessage refuses to write. */
export function controlFrame(body: unknown): Buffer {
  return Buffer.concat([
    Buffer.from([FrameKind.control, PROTOCOL_VERSION]),
    new Packr({ useRecords: false }).pack(body),
  ]);
}
