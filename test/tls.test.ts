/**
 * TLS: a coordinator with a certificate, workers dialing wss:// and trusting its CA; with the same --tls-* options on
 * the workers, their ring links run over wss:// too (issue 13, finding 10).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { decodeMessage } from '../shared/wire/protocol.js';
import { probe } from './helpers/probe.js';
import { killAll, readJsonLines, runCli, tempDir, waitUntil } from './helpers/procs.js';

after(killAll);

test(
  'a run over wss:// with a self-signed certificate trusted through --tls-ca; an untrusting worker is refused',
  { timeout: 120_000 },
  async () => {
    const dir = await tempDir('tls');
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const summary = path.join(dir, 'summary.json');
    const coord = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '1',
      '--tls-cert',
      cert,
      '--tls-key',
      key,
      '--model',
      'mlp',
      '--train-limit',
      '512',
      '--test-limit',
      '200',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--run-dir',
      dir,
      '--summary-json',
      summary,
    ]);
    const [, port] = await coord.waitFor(/coordinator wss:\/\/[^:]+:(\d+)/);
    const url = `wss://127.0.0.1:${port}`;
    const untrusting = runCli([
      'worker',
      '--coordinator',
      url,
      '--listen',
      '127.0.0.1:0',
      '--backend',
      'cpu',
      '--coordinator-retry-ms',
      '500',
    ]);
    assert.equal(await untrusting.exited(30_000), 1, 'a worker that does not trust the certificate cannot join');
    const trusting = runCli([
      'worker',
      '--coordinator',
      url,
      '--listen',
      '127.0.0.1:0',
      '--advertise',
      '127.0.0.1',
      '--backend',
      'cpu',
      '--tls-ca',
      cert,
    ]);
    assert.equal(await coord.exited(90_000), 0, coord.output());
    assert.equal(await trusting.exited(30_000), 0, trusting.output());
    assert.equal(JSON.parse(await fs.readFile(summary, 'utf8')).outcome, 'finished');
  },
);

test(
  'with --tls-cert/--tls-key on the workers the ring links run over wss:// with the same CA; plaintext is refused',
  { timeout: 180_000 },
  async () => {
    const dir = await tempDir('tls-ring');
    const { key, cert } = selfSigned(dir);
    const tls = ['--tls-cert', cert, '--tls-key', key];
    const summary = path.join(dir, 'summary.json');
    const coord = runCli([
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--dashboard-port',
      '0',
      '--min-workers',
      '2',
      ...tls,
      '--model',
      'mlp',
      '--train-limit',
      '512',
      '--test-limit',
      '200',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--run-dir',
      dir,
      '--summary-json',
      summary,
    ]);
    const [, port] = await coord.waitFor(/coordinator wss:\/\/[^:]+:(\d+)/);
    const worker = (name: string) =>
      runCli([
        'worker',
        '--coordinator',
        `wss://127.0.0.1:${port}`,
        '--listen',
        '127.0.0.1:0',
        '--advertise',
        '127.0.0.1',
        '--backend',
        'cpu',
        '--tls-ca',
        cert,
        ...tls,
        '--run-dir',
        dir,
        '--name',
        name,
      ]);
    const a = worker('worker-a');
    let ringPort = 0;
    await waitUntil(async () => {
      const lines = await readJsonLines<{ msg: string; ringPort?: number }>(path.join(dir, 'worker-a.log.jsonl')).catch(
        () => [],
      );
      ringPort = lines.find((l) => l.msg === 'worker started')?.ringPort ?? 0;
      return ringPort > 0;
    }, 'worker A listening');
    // The ring listener speaks TLS only: a plaintext WebSocket gets no challenge; one trusting the CA does.
    const plain = probe(`ws://127.0.0.1:${ringPort}/`);
    await assert.rejects(plain.message(0));
    const secure = new WebSocket(`wss://127.0.0.1:${ringPort}/`, { ca: await fs.readFile(cert, 'utf8') });
    secure.on('error', () => undefined);
    const first = await new Promise<Buffer>((resolve, reject) => {
      secure.once('message', (data) => resolve(data as Buffer));
      secure.once('close', () => reject(new Error('closed before the challenge')));
    });
    assert.equal(decodeMessage(first).type, 'challenge');
    secure.terminate();

    const b = worker('worker-b');
    assert.equal(await coord.exited(120_000), 0, coord.output());
    assert.equal(await a.exited(30_000), 0, a.output());
    assert.equal(await b.exited(30_000), 0, b.output());
    assert.equal(JSON.parse(await fs.readFile(summary, 'utf8')).outcome, 'finished');
  },
);

function selfSigned(dir: string): { key: string; cert: string } {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1'].concat([
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]),
    { stdio: 'ignore' },
  );
  return { key, cert };
}
