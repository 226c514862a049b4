/**
 * Link handshakes, for the coordinator's control port and each worker's ring port alike. `Admission.listen` is the
 * one way a listener accepts WebSocket links: every socket is a GuardedWebSocket (an 'error' listener from its
 * construction), and the WebSocket layer itself limits every message to `maxHandshakeBytes` until the link has
 * authenticated; only then is the limit raised to `maxPayloadBytes`. So an unauthenticated client can neither crash
 * the process nor make it buffer more than 64 KB.
 *
 * The accepting side sends a challenge and admits the link only when the first message answers it (shared/auth.ts);
 * a wrong or missing token, garbage or silence past the timeout closes the link with 1008 (policy violation), and a
 * message past the pre-authentication limit is cut off with 1009 when its header arrives. Unauthenticated links are
 * capped: beyond `maxPending`, new links are told 1013 (try again later), which dialers retry with backoff. A refused
 * link is destroyed within REFUSED_LINGER_MS, whether or not the peer completes the close handshake.
 */
import type http from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { authAnswer, newNonce, verifyAnswer, type LinkContext } from './auth.js';
import { AuthError, CLOSE_CODES, closeCodeFor, PeerBusyError, PeerLostError, ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import { decodeFrame, PROTOCOL_VERSION, type DecodedFrame, type Message, type MessageOf } from './wire/protocol.js';
import { guardServer, GuardedWebSocket, rawToBytes, refuseLink, sendMessage, setMaxPayload } from './ws-util.js';

export interface AdmissionOptions {
  token: string;
  context: LinkContext;
  /** Close a link that has not authenticated within this time. */
  authTimeoutMs: number;
  /** Refuse new links (1013, try again later) while this many are still unauthenticated. */
  maxPending: number;
  /** Largest message accepted before the link authenticated (a handshake is small), enforced by the ws receiver. */
  maxHandshakeBytes: number;
  /** Largest message accepted once the link authenticated. */
  maxPayloadBytes: number;
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

  /**
   * Accept WebSocket links on `server` (HTTP or HTTPS): the only way ringtrain listens for links. Returns the
   * WebSocketServer (for its `clients` and `close`).
   */
  listen(server: http.Server, admitted: (ws: WebSocket, answer: Answer<C>) => void): WebSocketServer {
    guardServer(server, this.opts.log);
    const wss = new WebSocketServer({
      server,
      maxPayload: this.opts.maxHandshakeBytes,
      perMessageDeflate: false,
      WebSocket: GuardedWebSocket,
    });
    wss.on('connection', (ws, req) =>
      this.accept(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`, admitted),
    );
    wss.on('error', (err) => this.opts.log.error({ err, link: this.opts.context }, 'link listener error'));
    wss.on('wsClientError', (_err, socket) => socket.destroy());
    return wss;
  }

  /** Handle a new link: challenge it, and hand it over once its answer verifies. */
  private accept(ws: WebSocket, remote: string, admitted: (ws: WebSocket, answer: Answer<C>) => void): void {
    if (this.pending >= this.opts.maxPending) {
      if (this.refusedSinceLog++ % 100 === 0)
        this.opts.log.warn({ remote, pending: this.pending }, 'too many unauthenticated links; refusing');
      refuseLink(ws, CLOSE_CODES.tryAgainLater, 'busy: too many unauthenticated links, try again later');
      return;
    }
    this.pending++;
    let settled = false;
    const nonce = newNonce();
    const settle = () => {
      settled = true;
      this.pending--;
      clearTimeout(timer);
    };
    const refuse = (err: unknown) => {
      if (settled) return;
      settle();
      this.opts.log.warn({ remote, link: this.opts.context, reason: (err as Error).message }, 'refused a link');
      refuseLink(ws, closeCodeFor(err), String((err as Error).message));
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
        settle();
        setMaxPayload(ws, this.opts.maxPayloadBytes);
        admitted(ws, answer);
      } catch (err) {
        refuse(err);
      }
    });
    ws.once('close', () => {
      if (!settled) settle();
    });
    // A framing error or a message past the pre-authentication limit: ws has sent its close code (1002, 1009);
    // destroy the link now rather than through the closing handshake.
    ws.on('error', (err) => refuse(err));
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
            : code === CLOSE_CODES.tryAgainLater
              ? new PeerBusyError(url, reason.toString())
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
  // Never without an 'error' listener, whatever the caller attaches (it sees failures through 'close').
  ws.on('error', () => undefined);
  return ws;
}
