/**
 * Small helpers at the socket boundary, shared by the coordinator and the workers: normalise what `ws` hands us,
 * send a control message if the socket is still open, close with a typed error's code.
 */
import WebSocket from 'ws';
import { closeCodeFor } from './errors.js';
import { encodeMessage, type Message } from './protocol.js';

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
  const reason = Buffer.from(String((err as Error)?.message ?? err)).subarray(0, 120).toString();
  if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(closeCodeFor(err), reason);
}

/** Nagle off: gradient chunks and small control messages should leave now, not after a 40 ms delay. */
export function noDelay(ws: WebSocket): void {
  const socket = (ws as unknown as { _socket?: { setNoDelay?: (v: boolean) => void } })._socket;
  socket?.setNoDelay?.(true);
}
