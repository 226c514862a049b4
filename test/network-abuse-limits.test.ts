/**
 * The listeners' limits, against real processes and raw TCP clients (issue 13, findings 1-3):
 * - every socket of every listener has its 'error' handler from the moment it is accepted: with the unauthenticated
 *   slots full, one more link sending a frame with a reserved opcode must not crash the coordinator or a worker;
 * - "busy" (the slots are full) is its own close code, 1013, and a worker refused as busy retries and joins;
 * - before authentication the WebSocket layer itself caps a message at 64 KB: a frame header announcing more is
 *   cut off with 1009 at once, without waiting for (or buffering) its payload;
 * - refused links are destroyed promptly, even when the client never answers the close frame;
 * - the dashboard's HTTP listener shrugs off garbage, an upgrade it does not serve and connections reset mid-request.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ADMISSION_DEFAULTS } from '../shared/admission.js';
import { CLOSE_CODES } from '../shared/errors.js';
import { killAll, readJsonLines, runCli, tempDir, waitUntil, type Proc } from './helpers/procs.js';
import { RawClient } from './helpers/raw-ws.js';

after(killAll);

const SLOTS = ADMISSION_DEFAULTS.maxPending;

function upgradeRequest(): string {
  return [
    'GET / HTTP/1.1',
    'Host: 127.0.0.1',
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    '',
    '',
  ].join('\r\n');
}

/** A masked client frame header announcing `length` payload bytes (any size), with no payload. */
function frameHeader(opcode: number, length: number): Buffer {
  const head = Buffer.alloc(14);
  head[0] = 0x80 | opcode;
  head[1] = 0x80 | 127;
  head.writeBigUInt64BE(BigInt(length), 2);
  randomBytes(4).copy(head, 10);
  return head;
}

/** Fill every unauthenticated slot with a link that got its challenge and then says nothing. */
async function fillSlots(port: number): Promise<RawClient[]> {
  const idle = Array.from({ length: SLOTS }, () => new RawClient(port));
  await Promise.all(idle.map((c) => c.upgrade()));
  return idle;
}

/** One more link, sending a frame with reserved opcode 0x3 right behind its upgrade request. */
async function reservedOpcodeBeyondSlots(port: number): Promise<{ code: number; closedMs: number }> {
  const c = new RawClient(port);
  const t0 = performance.now();
  c.socket.write(upgradeRequest());
  c.socket.write(Buffer.concat([frameHeader(0x3, 4), randomBytes(4)]));
  const code = await c.closeCode();
  // The client never answers the close frame: the server must still drop the TCP connection promptly.
  await c.closed;
  return { code, closedMs: performance.now() - t0 };
}

/** The process still runs and its listener challenges a new link (fails at once if the process died). */
async function healthy(proc: Proc, port: number): Promise<boolean> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null)
    throw new Error(`the process died (${proc.child.exitCode ?? proc.child.signalCode}):\n${proc.output()}`);
  const c = new RawClient(port);
  try {
    await c.upgrade();
    return true;
  } catch {
    return false;
  } finally {
    c.socket.destroy();
  }
}

function startCoordinator(dir: string, extra: string[] = []): Proc {
  return runCli([
    'coordinator',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--dashboard-host',
    '127.0.0.1',
    '--dashboard-port',
    '0',
    '--model',
    'mlp',
    '--train-limit',
    '256',
    '--test-limit',
    '100',
    '--epochs',
    '1',
    '--batch-size',
    '32',
    '--run-dir',
    dir,
    ...extra,
  ]);
}

function startWorker(url: string, runDir: string, name: string): Proc {
  return runCli([
    'worker',
    '--coordinator',
    url,
    '--listen',
    '127.0.0.1:0',
    '--advertise',
    '127.0.0.1',
    '--backend',
    'cpu',
    '--run-dir',
    runDir,
    '--name',
    name,
  ]);
}

interface WorkerLog {
  msg: string;
  ringPort?: number;
  err?: string;
}

describe('listener limits against real processes', { timeout: 180_000 }, () => {
  test('the coordinator survives a reserved opcode on a link beyond the unauthenticated slots', async () => {
    const dir = await tempDir('limits-coord');
    const coord = startCoordinator(dir, ['--auth-timeout', '60000']);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    const idle = await fillSlots(Number(port));
    const refused = await reservedOpcodeBeyondSlots(Number(port));
    for (const c of idle) c.socket.destroy();
    await waitUntil(() => healthy(coord, Number(port)), 'the coordinator accepting links again', 10_000);
    assert.equal(coord.child.exitCode, null, `the coordinator is still running:\n${coord.output()}`);
    assert.equal(refused.code, CLOSE_CODES.tryAgainLater, 'busy is 1013, not a policy violation');
    assert.ok(refused.closedMs < 3_000, `the refused link was dropped after ${refused.closedMs.toFixed(0)} ms`);

    // The dashboard's HTTP listener: garbage, an upgrade it does not serve, requests reset half-way.
    const [, dashboardPort] = await coord.waitFor(/dashboard http:\/\/[^:]+:(\d+)/);
    const hostile = [
      randomBytes(300),
      upgradeRequest(),
      'GET /api/status HTTP/1.1\r\nHost: x\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
    ];
    await Promise.all(
      hostile.map(
        (bytes) =>
          new Promise<void>((resolve) => {
            const socket = net.connect(Number(dashboardPort), '127.0.0.1', () => {
              socket.write(bytes);
              setImmediate(() => socket.resetAndDestroy());
            });
            socket.on('error', () => undefined);
            socket.on('close', () => resolve());
          }),
      ),
    );
    const page = await fetch(`http://127.0.0.1:${dashboardPort}/api/status`);
    assert.equal(page.status, 200, 'the dashboard still answers');
    assert.equal(coord.child.exitCode, null);
    coord.child.kill('SIGTERM');
    await coord.exited(30_000);
  });

  test('before authentication a frame announcing more than 64 KB is cut off with 1009 at its header', async () => {
    const dir = await tempDir('limits-preauth');
    const coord = startCoordinator(dir, ['--auth-timeout', '60000']);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    for (const announced of [ADMISSION_DEFAULTS.maxHandshakeBytes + 1, 32 * 1024 * 1024]) {
      const c = new RawClient(Number(port));
      await c.upgrade();
      const t0 = performance.now();
      c.socket.write(frameHeader(0x2, announced)); // and never the payload
      assert.equal(await c.closeCode(), CLOSE_CODES.tooBig, `${announced} bytes announced`);
      await c.closed;
      assert.ok(performance.now() - t0 < 3_000, 'cut off at the header, not after a timeout');
    }
    assert.equal(coord.child.exitCode, null);
    coord.child.kill('SIGTERM');
    await coord.exited(30_000);
  });

  test('a worker refused as busy retries and joins; a worker ring port survives the reserved opcode', async () => {
    const dir = await tempDir('limits-busy');
    const summary = path.join(dir, 'summary.json');
    const coord = startCoordinator(dir, ['--auth-timeout', '60000', '--min-workers', '2', '--summary-json', summary]);
    const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
    const url = `ws://127.0.0.1:${port}`;

    // Worker A joins first; its ring port takes the same abuse as the coordinator.
    const a = startWorker(url, dir, 'worker-a');
    const logA = path.join(dir, 'worker-a.log.jsonl');
    let ringPort = 0;
    await waitUntil(
      async () => {
        const lines = await readJsonLines<WorkerLog>(logA).catch(() => []);
        ringPort = lines.find((l) => l.msg === 'worker started')?.ringPort ?? 0;
        return lines.some((l) => l.msg === 'joined the run') && ringPort > 0;
      },
      'worker A joined',
      60_000,
    );
    const ringIdle = await fillSlots(ringPort);
    const ringRefused = await reservedOpcodeBeyondSlots(ringPort);
    for (const c of ringIdle) c.socket.destroy();
    await waitUntil(() => healthy(a, ringPort), "worker A's ring port accepting again", 10_000);
    assert.equal(a.child.exitCode, null, `worker A is still running:\n${a.output()}`);
    assert.equal(ringRefused.code, CLOSE_CODES.tryAgainLater);

    // The coordinator's slots are full when worker B dials: it is told "busy", retries, and joins once they free.
    const idle = await fillSlots(Number(port));
    const b = startWorker(url, dir, 'worker-b');
    const logB = path.join(dir, 'worker-b.log.jsonl');
    await waitUntil(
      async () =>
        (await readJsonLines<WorkerLog>(logB).catch(() => [])).some(
          (l) => l.msg === 'coordinator unreachable; retrying' && /busy/.test(l.err ?? ''),
        ),
      'worker B told busy',
      60_000,
    );
    assert.equal(b.child.exitCode, null, `worker B keeps trying:\n${b.output()}`);
    for (const c of idle) c.socket.destroy();
    assert.equal(await coord.exited(120_000), 0, coord.output());
    assert.equal(await a.exited(30_000), 0, a.output());
    assert.equal(await b.exited(30_000), 0, b.output());
    assert.equal(JSON.parse(await fs.readFile(summary, 'utf8')).outcome, 'finished');
  });
});
