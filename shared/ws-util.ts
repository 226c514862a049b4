/**
 * Small helpers at the socket boundary, shared by the coordinator and the workers: normalise what `ws` hands us,
 * send a control message if the socket is still open, close with a typed error's code, refuse a link promptly, and
 * the one way a listener accepts sockets (`guardServer`, `GuardedWebSocket`), so that no accepted socket is ever
 * without an 'error' listener (an unhandled 'error' event ends a Node process).
 */
import type http from 'node:http';
import type net from 'node:net';
import WebSocket from 'ws';
import { closeCodeFor } from './errors.js';
import type { Logger } from './log.js';
import { encodeMessage, type Message } from './wire/protocol.js';

const ignore = (): void => undefined;

/**
 * The WebSocket class every listener creates its sockets with (ws's `WebSocket` server option): the socket has an
 * 'error' listener from its construction, before any code of ours sees it, so a protocol error on a link that is
 * being refused, closed or handed over can never go unhandled. Failures still surface as 'close' with their code.
 */
export class GuardedWebSocket extends WebSocket {
  constructor(...args: unknown[]) {
    // ws's server constructs with (null, undefined, options), an overload its typings lack.
    super(...(args as [string]));
    this.on('error', ignore);
  }
}

/** Every TCP (or TLS) socket an HTTP server accepts gets an 'error' listener; malformed requests are dropped. */
export function guardServer(server: http.Server, log: Logger): void {
  server.on('connection', (socket: net.Socket) => socket.on('error', ignore));
  server.on('tlsClientError', (err: Error, socket: net.Socket) => {
    log.debug({ err: err.message }, 'TLS handshake failed');
    socket.destroy();
  });
  if (server.listenerCount('clientError') === 0) server.on('clientError', (_err, socket) => socket.destroy());
}

/**
 * How long a refused link may still hold its socket: long enough for the close frame to leave, far shorter than ws's
 * 30 s closing handshake, during which a hostile client could keep sending.
 */
export const REFUSED_LINGER_MS = 500;

/** Refuse a link: send the close frame, stop reading from it, and destroy it shortly after whatever the peer does. */
export function refuseLink(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code, truncate(reason));
  ws.pause();
  setTimeout(() => ws.terminate(), REFUSED_LINGER_MS).unref();
}

/**
 * Raise (or lower) the largest message a socket's receiver accepts. Listeners start every link with the small
 * pre-authentication limit and raise it once the handshake verified; ws checks this limit when it reads a frame's
 * length, before buffering its payload. ws has no public setter, so fail loudly if its internals ever change.
 */
export function setMaxPayload(ws: WebSocket, bytes: number): void {
  const receiver = (ws as unknown as { _receiver?: { _maxPayload?: unknown } })._receiver;
  if (!receiver || typeof receiver._maxPayload !== 'number')
    throw new Error('ws internals changed: cannot set the receiver payload limit');
  receiver._maxPayload = bytes;
}

function truncate(reason: string): string {
  return Buffer.from(reason).subarray(0, 120).toString();
}

/** `ws` delivers a Buffer, an ArrayBuffer or a list of fragments depending on binaryType; we want bytes. */
export function rawToBytes(data: WebSocket.RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

/** Send if open; returns whether it was sent (a closing socket drops the message, as the peer is gone anyway). */
export function sendMessage(ws: WebSocket, message: Message): boolean {
  if (ws.readyState !== WebSocket.OPEN) return false;
  ws.send(encodeMessage(message));
  return true;
}

/** Close a link because of `err`, with the close code the error maps to (reason truncated to the 123-byte limit). */
export function closeWithError(ws: WebSocket, err: unknown): void {
  const reason = truncate(String((err as Error)?.message ?? err));
  if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(closeCodeFor(err), reason);
}

/**
 * Liveness of one link: ping every `intervalMs`; if no pong came back for `misses` intervals, the peer is gone
 * (a killed machine, a cut cable, a stopped process), so terminate the link and report it. Returns a stop function.
 */
export function keepAlive(ws: WebSocket, intervalMs: number, misses: number, onDead: () => void): () => void {
  let lastPong = Date.now();
  const onPong = () => {
    lastPong = Date.now();
  };
  ws.on('pong', onPong);
  const timer = setInterval(() => {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastPong > intervalMs * misses) {
      stop();
      onDead();
      ws.terminate();
      return;
    }
    ws.ping();
  }, intervalMs);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    ws.off('pong', onPong);
  };
  ws.once('close', stop);
  return stop;
}
