#!/usr/bin/env node
/**
 * The backend comparison alone (the native-backend issue's figures), without the rest of `npm run bench`:
 *
 *   npm run bench:backends -- [--repeats 3] [--models lenet5,keras-cnn] [--out FILE.json]
 *
 * Prints the Markdown table, the targets and where the JSON went. The same section is part of `npm run bench`.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { backendsMarkdown, backendTargets } from './bench-backends-report.js';
import { BENCH_MODELS, BENCH_TRAIN_LIMIT, measureBackends, type BenchModel } from './bench-backends.js';

const o = new Command('bench-backends')
  .option('--repeats <n>', 'runs of each measurement (median reported)', Number, 3)
  .option('--models <list>', 'models to measure', BENCH_MODELS.join(','))
  .option('--out <file>', 'write the section as JSON here', path.join(os.tmpdir(), 'ringtrain-bench-backends.json'))
  .parse(process.argv)
  .opts<{ repeats: number; models: string; out: string }>();
const models = o.models.split(',').filter((m): m is BenchModel => (BENCH_MODELS as readonly string[]).includes(m));
const started = new Date();
const section = await measureBackends(
  { quick: false, repeats: o.repeats, trainLimit: BENCH_TRAIN_LIMIT, testLimit: 500, models },
  (line) => process.stderr.write(`${line}\n`),
);
const targets = backendTargets(section, true);
const load = os.loadavg().map((l) => l.toFixed(2));
await fs.writeFile(o.out, `${JSON.stringify({ startedAt: started.toISOString(), load, section, targets }, null, 2)}\n`);
process.stdout.write(`${backendsMarkdown(section)}\n\n`);
for (const t of targets)
  process.stdout.write(`${t.met === null ? '-' : t.met ? 'met' : 'NOT MET'}  ${t.description}: ${t.measured}\n`);
process.stdout.write(`started ${started.toISOString()}, load average at the end ${load.join(' ')}; JSON: ${o.out}\n`);
