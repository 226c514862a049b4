/**
 * Link handshakes, for the coordinator's control port and each worker's ring port alike. The accepting side sends a
 * challenge and admits the link only when the first message answers it (shared/auth.ts); a wrong or missing token,
 * garbage, an oversized first message or silence past the timeout closes the link with a policy-violation code and
 * one log line. Unauthenticated links are capped, so a flood of idle connections cannot exhaust the process.
 */
import WebSocket from 'ws';
import { authAnswer, newNonce, verifyAnswer, type LinkContext } from './auth.js';
import { AuthError, CLOSE_CODES, PeerLostError, ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import { decodeFrame, PROTOCOL_VERSION, type DecodedFrame, type Message, type MessageOf } from './wire/protocol.js';
import { closeWithError, rawToBytes, sendMessage } from './ws-util.js';

export interface AdmissionOptions {
  token: string;
  context: LinkContext;
  /** Close a link that has not authenticated within this time. */
  authTimeoutMs: number;
  /** Refuse new links while this many are still unauthenticated. */
  maxPending: number;
  /** Largest first message accepted (a handshake is small). */
  maxHandshakeBytes: number;
  log: Logger;
}

export const ADMISSION_DEFAULTS = { authTimeoutMs: 5_000, maxPending: 64, maxHandshakeBytes: 64 * 1024 };

type Answer<C extends LinkContext> = C extends 'control' ? MessageOf<'hello'> : MessageOf<'ringHello'>;

export class Admission<C extends LinkContext> {
  private pending = 0;
  private refusedSinceLog = 0;

  constructor(private readonly opts: AdmissionOptions & { context: C }) {}

  get pendingCount(): number {
    return this.pending;
  }

  /** Handle a new link: challenge it, and hand it over once its answer verifies. */
  accept(ws: WebSocket, remote: string, admitted: (ws: WebSocket, answer: Answer<C>) => void): void {
    if (this.pending >= this.opts.maxPending) {
      if (this.refusedSinceLog++ % 100 === 0)
        this.opts.log.warn({ remote, pending: this.pending }, 'too many unauthenticated links; refusing');
      ws.close(CLOSE_CODES.policyViolation, 'too many unauthenticated connections');
      return;
    }
    this.pending++;
    let settled = false;
    const nonce = newNonce();
    const refuse = (err: unknown) => {
      if (settled) return;
      settled = true;
      this.pending--;
      clearTimeout(timer);
      this.opts.log.warn({ remote, link: this.opts.context, reason: (err as Error).message }, 'refused a link');
      closeWithError(ws, err);
    };
    const timer = setTimeout(
      () => refuse(new AuthError(`no authenticated answer within ${this.opts.authTimeoutMs} ms`)),
      this.opts.authTimeoutMs,
    );
    timer.unref();
    ws.once('message', (data) => {
      if (settled) return;
      try {
        const answer = this.verify(rawToBytes(data), nonce);
        settled = true;
        this.pending--;
        clearTimeout(timer);
        admitted(ws, answer);
      } catch (err) {
        refuse(err);
      }
    });
    ws.once('close', () => {
      if (!settled) {
        settled = true;
        this.pending--;
        clearTimeout(timer);
      }
    });
    ws.on('error', () => undefined); // reported through 'close'
    sendMessage(ws, { type: 'challenge', protocolVersion: PROTOCOL_VERSION, nonce });
  }

  private verify(bytes: Uint8Array, nonce: Uint8Array): Answer<C> {
    if (bytes.byteLength > this.opts.maxHandshakeBytes)
      throw new AuthError(`handshake of ${bytes.byteLength} bytes is too large`);
    let frame: DecodedFrame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      // Garbage, a missing or ill-typed proof, another protocol version: all a refusal (1008), not a protocol error.
      throw new AuthError(`not a handshake: ${(err as Error).message}`);
    }
    const expected = this.opts.context === 'control' ? 'hello' : 'ringHello';
    if (frame.kind !== 'control' || frame.message.type !== expected)
      throw new AuthError(`expected '${expected}' first`);
    const answer = frame.message as Answer<C>;
    if (!verifyAnswer(this.opts.token, this.opts.context, nonce, answer.auth))
      throw new AuthError('wrong cluster token');
    return answer;
  }
}

/** Dial a link and answer its challenge; resolves with the open, authenticated socket. */
export async function dialAuthenticated(
  url: string,
  opts: {
    token: string;
    context: LinkContext;
    timeoutMs: number;
    ws?: WebSocket.ClientOptions;
    answer: (auth: Uint8Array) => Message;
  },
): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...opts.ws });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new PeerLostError(`${url}: no challenge within ${opts.timeoutMs} ms`)),
        opts.timeoutMs,
      );
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(new PeerLostError(url, { cause: err }));
      });
      ws.once('close', (code, reason) => {
        clearTimeout(timer);
        reject(
          code === CLOSE_CODES.policyViolation
            ? new AuthError(`${url} refused the link: ${reason.toString()}`)
            : new PeerLostError(`${url} (close code ${code})`),
        );
      });
      ws.once('message', (data) => {
        clearTimeout(timer);
        try {
          const frame = decodeFrame(rawToBytes(data));
          if (frame.kind !== 'control' || frame.message.type !== 'challenge')
            throw new ProtocolError('expected a challenge first');
          sendMessage(ws, opts.answer(authAnswer(opts.token, opts.context, frame.message.nonce)));
          resolve();
        } catch (err) {
          reject(err);
        }
      });
    });
  } catch (err) {
    ws.removeAllListeners();
    ws.on('error', () => undefined);
    ws.terminate();
    throw err;
  }
  ws.removeAllListeners();
  return ws;
}
