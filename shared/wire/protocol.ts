/**
 * The ringtrain wire protocol, version 1. The only module that touches `msgpackr`.
 *
 * Every WebSocket message is binary and starts with a 2-byte frame prefix:
 *
 *   byte 0   frame kind: 1 = control message, 2 = gradient chunk
 *   byte 1   PROTOCOL_VERSION (1)
 *
 * Control message (kind 1): the prefix, then one msgpack map (plain string keys, no msgpackr
 * records) with a string field `type` naming the message and that message's fields. Byte fields are
 * msgpack `bin`; on decode they are Uint8Array views into the received frame. Unknown extra fields
 * are dropped; unknown types, missing or ill-typed fields are rejected. Every message sent after a
 * worker joined carries `gen`, the membership generation (a positive integer), so messages of an
 * old membership can be fenced off.
 *
 *   worker -> coordinator   hello, ready, heartbeat, stall, ringLinkDown, metrics, evalResult, epochDone, weights,
 *                           failed
 *   coordinator -> worker   challenge, welcome, assign, start, shard, requestWeights, stop
 *   worker -> worker        challenge (from the listening successor), then ringHello (from the dialing predecessor)
 *
 * Handshakes: the accepting side of every link first sends `challenge { nonce }`; the dialing side answers with
 * `hello` (control link) or `ringHello` (ring link) carrying `auth` = HMAC-SHA256(token, context | nonce), see
 * shared/auth.ts. Nothing else is accepted on a link before that answer verifies.
 *
 * Gradient chunk (kind 2), all integers little-endian, a 20-byte header then the payload:
 *
 *   offset  size  field
 *        0     1  kind = 2
 *        1     1  version = 1
 *        2     1  phase (0 = reduce-scatter, 1 = allgather)
 *        3     1  encoding of the values: 0 = float32, 1 = float16 (`--compression fp16`); nothing else is valid
 *        4     4  generation (u32)
 *        8     4  step (u32, training step)
 *       12     4  chunk (u32, block index: ring chunk c, or its segment k when chunks are cut into segments for
 *                 pipelining, sent as c + k * worldSize; unsegmented chunks are simply c)
 *       16     4  count (u32, number of values)
 *       20     4*count (float32) or 2*count (float16) bytes: the values, little-endian
 *
 * Frames are identified by (generation, step, phase, chunk); a link carries each such key at most once. Float16
 * frames are decoded by decodeChunkValues (the ring transport's path); decodeFrame and decodeChunkFrame accept float32
 * chunk frames only.
 *
 * Decoding never throws anything but ProtocolVersionError (wrong version byte or version field) or
 * ProtocolError (anything else wrong), whatever the input bytes.
 *
 * This file is the module's public face; the work is split by concern: framing.ts (the prefix), messages.ts (the
 * control message types), control.ts (their validation and the msgpack codec), chunk.ts (the gradient frame header
 * and its codec), bytes.ts (typed arrays as little-endian bytes), fields.ts and describe.ts (validation helpers).
 */
import { decodeChunkBody, float32Only, type ChunkHeader } from './chunk.js';
import { decodeControlBody } from './control.js';
import { FrameKind, readPrefix, unknownKind } from './framing.js';
import type { Message } from './messages.js';

export * from './messages.js';
export { PROTOCOL_VERSION, FrameKind, FRAME_PREFIX_BYTES } from './framing.js';
export { encodeMessage, decodeMessage } from './control.js';
export {
  CHUNK_HEADER_BYTES,
  Phase,
  ValueEncoding,
  bytesPerValue,
  chunkFrameBytes,
  writeChunkHeader,
  encodeChunkFrame,
  decodeChunkFrame,
  decodeChunkValues,
  type ChunkHeader,
  type ChunkKey,
} from './chunk.js';
export { float32ToBytes, bytesToFloat32, uint32ToBytes, bytesToUint32, HOST_IS_LITTLE_ENDIAN } from './bytes.js';

export type DecodedFrame =
  { kind: 'control'; message: Message } | { kind: 'chunk'; header: ChunkHeader; data: Float32Array };

/** Decode any frame, dispatching on its kind byte. */
export function decodeFrame(buf: Uint8Array): DecodedFrame {
  const kind = readPrefix(buf);
  if (kind === FrameKind.control) return { kind: 'control', message: decodeControlBody(buf) };
  if (kind === FrameKind.chunk) {
    const { header, values } = decodeChunkBody(buf);
    return { kind: 'chunk', header, data: float32Only(values) };
  }
  throw unknownKind(kind);
}
