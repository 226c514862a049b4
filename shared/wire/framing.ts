/** The 2-byte prefix of every frame on every link (see protocol.ts for the whole format). */
import { ProtocolError, ProtocolVersionError } from '../errors.js';
import { describe } from './describe.js';

export const PROTOCOL_VERSION = 1;
export const FrameKind = { control: 1, chunk: 2 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];
export const FRAME_PREFIX_BYTES = 2;

/** Check the 2-byte prefix and return the frame kind byte. */
export function readPrefix(buf: unknown): number {
  if (!(buf instanceof Uint8Array)) throw new ProtocolError(`a frame must be bytes, got ${describe(buf)}`);
  if (buf.byteLength < FRAME_PREFIX_BYTES) {
    throw new ProtocolError(`frame of ${buf.byteLength} bytes is shorter than the ${FRAME_PREFIX_BYTES}-byte prefix`);
  }
  if (buf[1] !== PROTOCOL_VERSION) throw new ProtocolVersionError(PROTOCOL_VERSION, buf[1]);
  return buf[0];
}

export function unknownKind(kind: number): ProtocolError {
  return new ProtocolError(`unknown frame kind ${kind} (expected ${FrameKind.control} or ${FrameKind.chunk})`);
}
