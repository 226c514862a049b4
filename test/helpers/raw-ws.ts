/** Raw TCP WebSocket clients for the network-abuse tests: they can send what `ws` would never let a client send. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';

interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** A TCP client that parses what the server sends: the HTTP response head, then unmasked WebSocket frames. */
export class RawClient {
  readonly socket: net.Socket;
  head = '';
  readonly frames: ServerFrame[] = [];
  readonly closed: Promise<void>;
  private buffer = Buffer.alloc(0);
  private wake = new Set<() => void>();

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => undefined);
    this.socket.on('data', (data) => {
      this.buffer = Buffer.concat([this.buffer, data]);
      this.parse();
    });
    this.closed = new Promise((resolve) =>
      this.socket.once('close', () => {
        resolve();
        this.notify();
      }),
    );
  }

  get bytesReceived(): number {
    return this.socket.bytesRead;
  }

  /** Complete a WebSocket upgrade by hand (nothing in `ws` to keep us from sending broken frames afterwards). */
  async upgrade(): Promise<void> {
    this.socket.write(
      [
        'GET / HTTP/1.1',
        'Host: 127.0.0.1',
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
        '',
        '',
      ].join('\r\n'),
    );
    await this.until(() => this.frames.length > 0, 'the challenge');
    assert.match(this.head, /^HTTP\/1\.1 101 /);
    assert.equal(this.frames[0]!.opcode, 0x2, 'a binary challenge');
  }

  /** The close code of the server's close frame. */
  async closeCode(): Promise<number> {
    await this.until(() => this.frames.some((f) => f.opcode === 0x8), 'a close frame');
    return this.frames.find((f) => f.opcode === 0x8)!.payload.readUInt16BE(0);
  }

  until(done: () => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (done()) {
          this.wake.delete(check);
          resolve();
        } else if (this.socket.destroyed) {
          this.wake.delete(check);
          reject(new Error(`socket closed before ${what}`));
        }
      };
      this.wake.add(check);
      check();
    });
  }

  private notify(): void {
    for (const w of [...this.wake]) w();
  }

  private parse(): void {
    if (!this.head) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.head = this.buffer.subarray(0, end).toString('latin1');
      this.buffer = this.buffer.subarray(end + 4);
    }
    for (;;) {
      if (this.buffer.length < 2) break;
      let length = this.buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) break;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) break;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) break;
      this.frames.push({ opcode: this.buffer[0]! & 0x0f, payload: this.buffer.subarray(offset, offset + length) });
      this.buffer = this.buffer.subarray(offset + length);
    }
    this.notify();
  }
}

/** A client-to-server frame header (+ masked payload); `announced` lets the header lie about the length. */
export function clientFrame(opts: {
  opcode: number;
  payload: Buffer;
  fin?: boolean;
  masked?: boolean;
  announced?: number;
}): Buffer {
  const length = opts.announced ?? opts.payload.length;
  const first = ((opts.fin ?? true) ? 0x80 : 0) | opts.opcode;
  const maskBit = (opts.masked ?? true) ? 0x80 : 0;
  const head =
    length < 126
      ? Buffer.from([first, maskBit | length])
      : Buffer.from([first, maskBit | 126, length >> 8, length & 0xff]);
  if (!(opts.masked ?? true)) return Buffer.concat([head, opts.payload]);
  const mask = randomBytes(4);
  const body = Buffer.from(opts.payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}
