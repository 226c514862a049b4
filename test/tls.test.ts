/** TLS on the control link: a coordinator with a certificate, workers dialing wss:// and trusting its CA. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { killAll, runCli, tempDir } from './helpers/procs.js';

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
