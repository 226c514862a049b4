/**
 * "Try the model" in headless Chromium: a model trained by `ringtrain train` (model.json + weights in its run folder)
 * is loaded by TensorFlow.js in the page, from the dashboard's own server; digits drawn on the canvas with the mouse
 * are classified correctly. Also: a run still being written is followed as a tail of its events file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createEventRecorder, EVENTS_FILE } from '../coordinator/dashboard/run-files.js';
import type { RunEvent } from '../coordinator/events.js';
import { silentLogger } from '../shared/log.js';
import { serveRunDirs } from '../scripts/cli/dashboard.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));
const SHOTS = fileURLToPath(new URL('../../docs/screenshots/', import.meta.url));

const worker = (rank: number) => ({ id: `w${rank}`, rank, host: `h${rank}`, backend: 'cpu', state: 'joined' as const });
const record = (step: number, allreduceMs: number) => ({
  epoch: 0,
  step,
  loss: 2 - step / 10,
  samples: 32,
  dataMs: 1,
  computeMs: 10,
  allreduceMs,
  applyMs: 1,
  reduceScatterMs: allreduceMs / 2,
  startedAt: Date.now(),
});

/** A small run's events, the first part of a run (not ended yet). */
function runStart(): RunEvent[] {
  const events: RunEvent[] = [
    { kind: 'runStarted', runId: 'tail-run', model: 'mlp', epochs: 1, minWorkers: 2, batchSize: 32 },
    { kind: 'ringFormed', gen: 1, workers: [worker(0), worker(1)] },
    { kind: 'epochStarted', epoch: 0, epochs: 1, samples: 640 },
  ];
  for (let s = 0; s < 5; s++) {
    events.push({ kind: 'steps', gen: 1, rank: 0, records: [record(s, 2)] });
    events.push({ kind: 'steps', gen: 1, rank: 1, records: [record(s, 12)] });
  }
  return events;
}

/** Draw strokes (lists of points in canvas pixels, 280x280) with the mouse. */
async function draw(page: Page, strokes: [number, number][][]): Promise<void> {
  await page.locator('#digit-canvas').scrollIntoViewIfNeeded();
  const box = (await page.locator('#digit-canvas').boundingBox())!;
  for (const points of strokes) {
    await page.mouse.move(box.x + points[0]![0], box.y + points[0]![1]);
    await page.mouse.down();
    for (const [x, y] of points.slice(1)) await page.mouse.move(box.x + x, box.y + y, { steps: 3 });
    await page.mouse.up();
  }
}

const ellipse = (cx: number, cy: number, rx: number, ry: number): [number, number][] =>
  Array.from({ length: 33 }, (_, i) => [
    cx + rx * Math.sin((i / 32) * 2 * Math.PI),
    cy - ry * Math.cos((i / 32) * 2 * Math.PI),
  ]);

async function predicted(page: Page): Promise<{ name: string; p: number }[]> {
  await page.waitForSelector('#predictions li', { timeout: 10_000 });
  return page.evaluate(
    () => (globalThis as unknown as { __ringtrainPrediction: { name: string; p: number }[] }).__ringtrainPrediction,
  );
}

test('a digit drawn with the mouse is classified by the trained model in the page', { timeout: 300_000 }, async (t) => {
  if (!fs.existsSync(CHROMIUM)) return void t.skip(`${CHROMIUM} not found`);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-model-'));
  const runDir = path.join(root, 'run');
  let browser: Browser | undefined;
  let served: Awaited<ReturnType<typeof serveRunDirs>> | undefined;
  try {
    const trained = spawnSync(
      process.execPath,
      [
        CLI,
        'train',
        '--model',
        'mlp',
        '--epochs',
        '2',
        '--train-limit',
        '20000',
        '--test-limit',
        '1000',
        '--run-dir',
        runDir,
        '--quiet',
      ],
      { encoding: 'utf8', timeout: 240_000 },
    );
    assert.equal(trained.status, 0, trained.stdout + trained.stderr);
    assert.ok(fs.existsSync(path.join(runDir, 'model', 'model.json')), 'ringtrain train saved its model');
    // The run folder's events: a finished little run, so the dashboard has a run to show beside the model.
    const recorder = createEventRecorder(runDir);
    for (const e of runStart()) recorder.observe(e, Date.now());
    await recorder.close();

    served = await serveRunDirs({ dirs: [runDir], host: '127.0.0.1', port: 0, log: silentLogger() });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const problems: string[] = [];
    const outside: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('request', (r) => {
      if (!r.url().startsWith(served!.url)) outside.push(r.url());
    });
    await page.goto(served.url);
    await page.waitForFunction(
      () => (globalThis as unknown as { __ringtrainModel?: string }).__ringtrainModel === 'ready',
      null,
      {
        timeout: 60_000,
      },
    );
    assert.match((await page.textContent('#model-info')) ?? '', /input 28×28×1, 10 classes/);

    await draw(page, [ellipse(140, 140, 55, 85)]);
    const zero = await predicted(page);
    assert.equal(zero.length, 3, 'top-3 classes');
    assert.equal(zero[0]!.name, '0', `a drawn zero: ${JSON.stringify(zero)}`);
    await page.locator('#model-card').screenshot({ path: path.join(SHOTS, 'dashboard-try-model.png') });

    await page.click('#digit-clear');
    await draw(page, [
      [
        [150, 40],
        [145, 140],
        [140, 240],
      ],
    ]);
    const one = await predicted(page);
    assert.equal(one[0]!.name, '1', `a drawn one: ${JSON.stringify(one)}`);
    assert.deepEqual(outside, [], 'nothing is fetched from anywhere but the dashboard');
    assert.deepEqual(problems, []);
  } finally {
    await browser?.close();
    await served?.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a run still going is followed as a tail of its events file', { timeout: 60_000 }, async () => {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-tail-'));
  let served: Awaited<ReturnType<typeof serveRunDirs>> | undefined;
  try {
    const file = path.join(runDir, EVENTS_FILE);
    const lines = runStart().map((event) => `${JSON.stringify({ at: Date.now(), event })}\n`);
    fs.writeFileSync(
      file,
      lines.join('') + 'not json\n{"at":1,"event":{"kind":"steps","gen":1,"rank":0,"records":[{}]}}\n',
    );
    served = await serveRunDirs({ dirs: [runDir], host: '127.0.0.1', port: 0, log: silentLogger() });
    const status = async (): Promise<{ run: { phase: string }; step: number; waits: { steps: number } }> =>
      (await fetch(`${served!.url}api/status`)).json() as never;
    const before = await status();
    assert.equal(before.run.phase, 'training');
    assert.equal(before.step, 4);
    assert.equal(before.waits.steps, 5);
    // The run goes on: more steps, half a line, then the rest of it and the end.
    const more: RunEvent[] = [0, 1].map((rank) => ({ kind: 'steps', gen: 1, rank, records: [record(5, 3)] }));
    const end: RunEvent = {
      kind: 'runEnded',
      summary: {
        outcome: 'finished',
        epochs: 1,
        steps: 6,
        testAccuracy: 0.9,
        samplesPerSec: 100,
        wallSeconds: 3,
        workers: 2,
      },
    };
    const tail = [...more, end].map((event) => JSON.stringify({ at: Date.now(), event })).join('\n') + '\n';
    fs.appendFileSync(file, tail.slice(0, tail.length - 20));
    const deadline = Date.now() + 20_000;
    while ((await status()).step !== 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await status()).run.phase, 'training', 'half a line waits for the rest');
    fs.appendFileSync(file, tail.slice(tail.length - 20));
    while ((await status()).run.phase !== 'finished' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    const after = await status();
    assert.equal(after.run.phase, 'finished');
    assert.equal(after.waits.steps, 6);
  } finally {
    await served?.close();
    fs.rmSync(runDir, { recursive: true, force: true });
  }
});
