#!/usr/bin/env node
/**
 * The best-effort native set-up that `npm ci` / `npm install` run (package.json `postprepare`, after the TypeScript
 * build). It never fails the install: where the native backend cannot be built it prints one line saying why, and
 * ringtrain runs on wasm. RINGTRAIN_NATIVE=0 skips it.
 */
import { setupFailureReason, setupNative } from '../shared/tf/native-setup.js';
import { nativeInstallDir, writeSetupStatus } from '../shared/tf/native-paths.js';

const prefix = 'ringtrain native backend:';

async function main(): Promise<void> {
  if (process.env.RINGTRAIN_NATIVE === '0') {
    process.stdout.write(`${prefix} skipped (RINGTRAIN_NATIVE=0); ringtrain runs on wasm\n`);
    return;
  }
  const started = performance.now();
  try {
    const m = await setupNative({ say: (l) => process.stdout.write(`${prefix} ${l}\n`) });
    writeSetupStatus(nativeInstallDir(), { ok: true, at: new Date().toISOString() });
    const s = ((performance.now() - started) / 1000).toFixed(1);
    process.stdout.write(`${prefix} ready (libtensorflow ${m.tensorflow}, tfjs-node ${m.tfjsNode}; ${s} s)\n`);
  } catch (err) {
    const reason = setupFailureReason(err);
    writeSetupStatus(nativeInstallDir(), { ok: false, reason, at: new Date().toISOString() });
    process.stdout.write(`${prefix} not set up (${reason}); ringtrain runs on wasm. See: ringtrain doctor\n`);
  }
}

main()
  .catch(() => undefined)
  .finally(() => {
    process.exitCode = 0;
  });
