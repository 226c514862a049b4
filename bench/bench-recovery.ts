#!/usr/bin/env node
/**
 * Recovery benchmark: a coordinator and 3 workers train LeNet-5; one worker is killed with SIGKILL mid-epoch. Prints
 * the time from the kill to the first step completed by the new (2-worker) generation, and how many steps that every
 * replica had completed before the kill were trained again (lost), which must be 0.
 *
 *   npm run bench:recovery -- [--backend auto] [--kill-at-step 30] [--runs 3]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { generateToken } from '../shared/auth.js';

const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));

interface Line {
  rank: number;
  gen: number;
  step: number;
  startedAt: number;
  dataMs: number;
  computeMs: number;
  allreduceMs: number;
  applyMs: number;
}

export interface RecoveryResult {
  killedAtStep: number;
  recoveryMs: number;
  lostSteps: number;
  newGenFirstStep: number;
  lastCompletedBeforeKill: number;
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

async function readLines(file: string): Promise<Line[]> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);
}

async function poll<T>(f: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A coordinator waiting for 2 of the 3 workers started, each reporting every step. */
async function startCluster(dir: string, backend: string, env: NodeJS.ProcessEnv) {
  const train = ['--train-limit', '19200', '--test-limit', '1000', '--epochs', '1', '--report-every', '1'];
  const coord = spawnCli(
    [
      'coordinator',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--min-workers',
      '2',
      '--run-dir',
      dir,
      ...train,
      '--check-every',
      '0',
    ],
    env,
  );
  const port = await poll(
    async () => coord.output().match(/coordinator ws:\/\/[^:]+:(\d+)/)?.[1],
    30_000,
    'the coordinator',
  );
  const worker = [
    'worker',
    '--coordinator',
    `ws://127.0.0.1:${port}`,
    '--listen',
    '127.0.0.1:0',
    '--advertise',
    '127.0.0.1',
  ];
  const workers = [0, 1, 2].map(() => spawnCli([...worker, '--backend', backend], env));
  return { coord, workers };
}

/** From the metrics before the kill and the new generation's first lines: how long recovery took, what was lost. */
function recoveryOf(killedAt: number, gen: number, before: Line[], newLines: Line[]): RecoveryResult {
  const first = newLines.reduce((a, b) => (b.step < a.step ? b : a));
  const completedAt = first.startedAt + first.dataMs + first.computeMs + first.allreduceMs + first.applyMs;
  // Survivors' completed steps under the old ring (the killed worker's last reports may never have been sent).
  const survivorsOld = before.filter((l) => l.gen === gen && l.rank !== 1);
  const byStep = new Map<number, Set<number>>();
  for (const l of survivorsOld) byStep.set(l.step, (byStep.get(l.step) ?? new Set()).add(l.rank));
  const lastCompleted = Math.max(-1, ...[...byStep].filter(([, ranks]) => ranks.size === 2).map(([s]) => s));
  return {
    killedAtStep: lastCompleted,
    recoveryMs: completedAt - killedAt,
    newGenFirstStep: first.step,
    lastCompletedBeforeKill: lastCompleted,
    lostSteps: Math.max(0, lastCompleted + 1 - first.step),
  };
}

export async function measureRecovery(opts: { backend: string; killAtStep: number }): Promise<RecoveryResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-recovery-'));
  const env = { ...process.env, RINGTRAIN_TOKEN: generateToken() };
  const { coord, workers } = await startCluster(dir, opts.backend, env);
  const metrics = path.join(dir, 'metrics.jsonl');
  try {
    await poll(
      async () =>
        (await readLines(metrics)).some((l) => l.rank === 2 && l.step >= opts.killAtStep) ? true : undefined,
      120_000,
      'training progress',
    );
    const killedAt = Date.now();
    workers[1]!.child.kill('SIGKILL');
    const before = (await readLines(metrics)).filter((l) => l.startedAt <= killedAt);
    const gen = Math.max(...before.map((l) => l.gen));
    const newLines = await poll(
      async () => {
        const ls = (await readLines(metrics)).filter((l) => l.gen > gen);
        return ls.length > 0 ? ls : undefined;
      },
      60_000,
      'the new generation',
    );
    return recoveryOf(killedAt, gen, before, newLines);
  } finally {
    for (const p of [coord, ...workers]) p.child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const o = new Command('bench-recovery')
    .option('--backend <name>', 'worker backend', 'auto')
    .option('--kill-at-step <n>', 'kill once rank 2 reported this step', Number, 30)
    .option('--runs <n>', 'repetitions', Number, 3)
    .parse(process.argv)
    .opts();
  const results: RecoveryResult[] = [];
  for (let i = 0; i < o.runs; i++) {
    const r = await measureRecovery({ backend: o.backend, killAtStep: o.killAtStep });
    results.push(r);
    process.stdout.write(
      `run ${i + 1}: kill -> first completed step of the new generation ${r.recoveryMs.toFixed(0)} ms; ` +
        `last step completed by all before the kill ${r.lastCompletedBeforeKill}, new generation starts at ${r.newGenFirstStep}; lost steps ${r.lostSteps}\n`,
    );
  }
  const sorted = results.map((r) => r.recoveryMs).sort((a, b) => a - b);
  process.stdout.write(
    `recovery median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms (min ${sorted[0]!.toFixed(0)}, max ${sorted[sorted.length - 1]!.toFixed(0)}); ` +
      `lost steps total ${results.reduce((s, r) => s + r.lostSteps, 0)}\n`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
