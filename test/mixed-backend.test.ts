/**
 * A ring that mixes backends is refused: backends round the optimizer's update differently, so replicas on two
 * backends would drift apart without any error. The coordinator turns the joiner away with the reason, and that
 * worker exits non-zero saying why, while the ring of the first backend is unaffected.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { killAll, runCli, tempDir } from './helpers/procs.js';

after(killAll);

test('a worker whose backend differs from the ring is refused with a clear error', { timeout: 120_000 }, async () => {
  const dir = await tempDir('mixed-backend');
  const coord = runCli(['coordinator', '--host', '127.0.0.1', '--port', '0', '--min-workers', '2', '--run-dir', dir]);
  const [, port] = await coord.waitFor(/coordinator ws:\/\/[^:]+:(\d+)/);
  const worker = (backend: string) =>
    runCli(['worker', '--coordinator', `ws://127.0.0.1:${port}`, '--listen', '127.0.0.1:0', '--backend', backend]);
  const first = worker('cpu');
  await coord.waitFor(/worker joined from .* \(cpu\)/);
  const second = worker('wasm');
  assert.equal(await second.exited(60_000), 1, second.output());
  assert.match(second.output(), /backend wasm differs from the ring's cpu/);
  assert.equal(first.child.exitCode, null, 'the first worker is still waiting for its ring');
});
