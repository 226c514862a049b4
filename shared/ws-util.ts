/**
 * Small helpers at the socket boundary, shared by the coordinator and the workers: normalise what `ws` hands us,
 * send a control message if the socket is still open, close with a typed error's code.
 */
import WebSocket from 'ws';
import { closeCodeFor } from './errors.js';
import { encodeMessage, type Message } from './wire/protocol.js';

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
  const reason = Buffer.from(String((err as Error)?.message ?? err))
    .subarray(0, 120)
    .toString();
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
