/**
 * Hostile clients, as in issue 13's finding 1: fill a listener's unauthenticated slots with idle WebSocket links,
 * send one more link a frame with a reserved opcode, and announce an oversized message before authenticating. The
 * listener must survive all of it; the links are dropped after `holdMs`.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

function upgradeRequest(): string {
  const key = randomBytes(16).toString('base64');
  return `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

/** A masked client frame header announcing `length` bytes (64-bit length form), plus `payload` if given. */
function frame(opcode: number, length: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(14);
  head[0] = 0x80 | opcode;
  head[1] = 0x80 | 127;
  head.writeBigUInt64BE(BigInt(length), 2);
  randomBytes(4).copy(head, 10);
  return Buffer.concat([head, payload]);
}

export interface HostileReport {
  links: number;
  /** Links the listener accepted at TCP level (a dead listener accepts none). */
  connected: number;
}

/** Run the attack on host:port; resolves after `holdMs` with every socket destroyed. */
export async function hostileClients(
  host: string,
  port: number,
  slots: number,
  holdMs: number,
): Promise<HostileReport> {
  const sockets: net.Socket[] = [];
  let connected = 0;
  const open = (first: Buffer | string, then?: Buffer) => {
    const s = net.connect(port, host);
    s.on('error', () => undefined);
    s.once('connect', () => {
      connected++;
      s.write(first);
      if (then) s.write(then);
    });
    sockets.push(s);
  };
  for (let i = 0; i < slots; i++) open(upgradeRequest());
  await new Promise((resolve) => setTimeout(resolve, Math.min(500, holdMs / 2)));
  open(upgradeRequest(), frame(0x3, 4, randomBytes(4))); // a reserved opcode beyond the slots
  open(upgradeRequest(), frame(0x2, 64 * 1024 * 1024)); // 64 MiB announced, never sent
  open(randomBytes(256)); // not HTTP at all
  await new Promise((resolve) => setTimeout(resolve, holdMs));
  for (const s of sockets) s.destroy();
  return { links: sockets.length, connected };
}
