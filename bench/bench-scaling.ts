#!/usr/bin/env node
/**
 * Scaling benchmark: the single-process trainer and clusters of N local workers on the same work, side by side, as
 * separate processes (exactly what a user runs). Prints samples/s (training time only, evaluation excluded) and
 * each cluster's speed-up and efficiency against the single-process trainer.
 *
 *   npm run bench:scaling -- [--workers 1,2] [--train-limit 19200] [--model lenet5] [--backend auto] [--json FILE]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';

const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));

export interface ScalingRow {
  name: string;
  workers: number;
  samplesPerSec: number;
  wallSeconds: number;
  testAccuracy: number;
  speedup: number;
  efficiency: number;
}

function run(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`ringtrain ${args[0]} exited with ${code}`)),
    );
  });
}

async function summaryOf(
  args: string[],
  dir: string,
  name: string,
): Promise<{ samplesPerSec: number; wallSeconds: number; testAccuracy: number }> {
  const file = path.join(dir, `${name}.json`);
  await run([...args, '--run-dir', path.join(dir, name), '--summary-json', file, '--quiet']);
  return JSON.parse(await fs.readFile(file, 'utf8'));
}

export async function benchScaling(opts: {
  workers: number[];
  trainLimit: number;
  epochs: number;
  model: string;
  backend: string;
  batchSize: number;
}): Promise<ScalingRow[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-scaling-'));
  const common = [
    '--model',
    opts.model,
    '--train-limit',
    String(opts.trainLimit),
    '--test-limit',
    '2000',
    '--epochs',
    String(opts.epochs),
    '--batch-size',
    String(opts.batchSize),
    '--backend',
    opts.backend,
  ];
  const base = await summaryOf(['train', ...common, '--no-save'], dir, 'train');
  const rows: ScalingRow[] = [{ name: 'ringtrain train', workers: 1, ...base, speedup: 1, efficiency: 1 }];
  for (const n of opts.workers) {
    const s = await summaryOf(['launch', '-np', String(n), ...common, '--check-every', '0'], dir, `cluster-${n}`);
    const speedup = s.samplesPerSec / base.samplesPerSec;
    rows.push({ name: `cluster, ${n} worker${n > 1 ? 's' : ''}`, workers: n, ...s, speedup, efficiency: speedup / n });
  }
  await fs.rm(dir, { recursive: true, force: true });
  return rows;
}

export function formatScaling(rows: ScalingRow[]): string {
  const head =
    '| run | workers | samples/s | speed-up vs train | efficiency | wall s | test accuracy |\n|---|---:|---:|---:|---:|---:|---:|';
  const body = rows.map(
    (r) =>
      `| ${r.name} | ${r.workers} | ${r.samplesPerSec.toFixed(0)} | ${r.speedup.toFixed(2)}x | ${(100 * r.efficiency).toFixed(0)}% | ${r.wallSeconds.toFixed(1)} | ${(100 * r.testAccuracy).toFixed(2)}% |`,
  );
  return [head, ...body].join('\n');
}

async function main(): Promise<void> {
  const o = new Command('bench-scaling')
    .option('--workers <list>', 'cluster sizes to run', '1,2')
    .option('--train-limit <n>', 'training samples per epoch', Number, 19200)
    .option('--epochs <n>', 'epochs', Number, 1)
    .option('--batch-size <n>', 'batch size per process', Number, 64)
    .option('--model <name>', 'model', 'lenet5')
    .option('--backend <name>', 'backend', 'auto')
    .option('--json <file>', 'also write the rows as JSON')
    .parse(process.argv)
    .opts();
  const rows = await benchScaling({
    workers: String(o.workers).split(',').map(Number),
    trainLimit: o.trainLimit,
    epochs: o.epochs,
    model: o.model,
    backend: o.backend,
    batchSize: o.batchSize,
  });
  process.stdout.write(`${formatScaling(rows)}\n\n(${os.cpus().length} cores; samples/s counts training time only)\n`);
  if (o.json) await fs.writeFile(o.json, `${JSON.stringify(rows, null, 2)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
