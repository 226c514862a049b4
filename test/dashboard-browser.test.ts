/**
 * The dashboard end to end: its HTTP routes and live stream against synthetic events, then a real 2-worker run
 * (coordinator in this process, workers as real processes) watched by headless Chromium.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { COORDINATOR_DEFAULTS, startCoordinator, type CoordinatorHandle } from '../coordinator/start.js';
import { createMetrics } from '../coordinator/dashboard/metrics.js';
import { startDashboard, type DashboardHandle } from '../coordinator/dashboard/server.js';
import { DashboardState } from '../coordinator/dashboard/state.js';
import type { RunEvent } from '../coordinator/events.js';
import { createTimelineWriter, workerPid, type TimelineWriter, type TraceEvent } from '../coordinator/timeline.js';
import { TOKEN_ENV } from '../shared/auth.js';
import { validateTrainConfig } from '../shared/config.js';
import { silentLogger } from '../shared/log.js';
import { createProgressView } from '../shared/cli/progress.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const CLI = fileURLToPath(new URL('../scripts/ringtrain.js', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const T0 = Date.now();
/** The cluster secret of the browser test's run; the page must never show it. */
const TOKEN = 'dashboard-test-secret-7f3a9c';

function syntheticRun(state: DashboardState, runId: string): void {
  const emit = (e: RunEvent): void => state.observe(e, Date.now());
  emit({ kind: 'runStarted', runId, model: 'mlp', epochs: 1, minWorkers: 1, batchSize: 32 });
  emit({ kind: 'workerJoined', worker: { id: 'w0', rank: -1, host: 'h0', backend: 'cpu', state: 'joined' } });
  emit({ kind: 'ringFormed', gen: 1, workers: [{ id: 'w0', rank: 0, host: 'h0', backend: 'cpu', state: 'joined' }] });
  emit({ kind: 'epochStarted', epoch: 0, epochs: 1, samples: 3200 });
}

function stepEvent(step: number): RunEvent {
  return {
    kind: 'steps',
    gen: 1,
    rank: 0,
    records: [
      {
        epoch: 0,
        step,
        loss: 1,
        samples: 32,
        dataMs: 1,
        computeMs: 5,
        allreduceMs: 0,
        reduceScatterMs: 0,
        applyMs: 1,
        startedAt: T0 + step * 10,
      },
    ],
  };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(port: number, pathname: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathname, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Bytes written straight to the socket, for requests no well-behaved client would send. */
function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(text));
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      reply += c;
    });
    socket.on('close', () => resolve(reply));
    socket.on('error', reject);
  });
}

/** A server-sent-events reader: parsed messages as they arrive, and a promise of the stream's end. */
function openEvents(port: number): Promise<{
  messages: { event: string; data: unknown; at: number }[];
  next(n: number): Promise<void>;
  ended: Promise<void>;
  destroy(): void;
}> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/events' }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/event-stream/);
      const messages: { event: string; data: unknown; at: number }[] = [];
      const waiters: { n: number; done: () => void }[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) messages.push({ event, data: JSON.parse(data), at: Date.now() });
        }
        for (const w of waiters.filter((x) => messages.length >= x.n)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.done();
        }
      });
      const ended = new Promise<void>((done) => res.on('close', () => done()));
      resolve({
        messages,
        ended,
        destroy: () => req.destroy(),
        next: (n) =>
          new Promise<void>((done) => {
            if (messages.length >= n) done();
            else waiters.push({ n, done });
          }),
      });
    });
    req.on('error', reject);
  });
}

test('the dashboard serves its page, status, metrics and health, and nothing else', async () => {
  const state = new DashboardState();
  syntheticRun(state, 'run-http');
  const metrics = createMetrics({ processMetrics: false });
  const dash = await startDashboard({ host: '127.0.0.1', port: 0, state, metrics, log: silentLogger() });
  try {
    assert.equal(dash.url, `http://127.0.0.1:${dash.port}/`);
    const page = await request(dash.port, '/');
    assert.equal(page.status, 200);
    assert.match(page.body, /<script src="\/app\.js" defer><\/script>/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    for (const [route, type, marker] of [
      ['/app.js', 'text/javascript', 'EventSource'],
      ['/app.css', 'text/css', '.workers'],
      ['/vendor/uplot.js', 'text/javascript', 'uPlot'],
      ['/vendor/uplot.css', 'text/css', '.uplot'],
    ] as const) {
      const r = await request(dash.port, route);
      assert.equal(r.status, 200, route);
      assert.ok(String(r.headers['content-type']).startsWith(type), route);
      assert.ok(r.body.includes(marker), `${route} holds ${marker}`);
    }
    const status = JSON.parse((await request(dash.port, '/api/status?x=1')).body) as {
      run: { id: string; phase: string };
      workers: unknown[];
    };
    assert.equal(status.run.id, 'run-http');
    assert.equal(status.run.phase, 'training');
    assert.equal(status.workers.length, 1);
    const prom = await request(dash.port, '/metrics');
    assert.equal(prom.status, 200);
    assert.match(String(prom.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(prom.body, /^# TYPE ringtrain_samples_total counter$/m);
    assert.equal((await request(dash.port, '/healthz')).body, 'ok\n');
    assert.equal((await request(dash.port, '/nope')).status, 404);
    assert.equal((await request(dash.port, '/../../etc/passwd')).status, 404);
    const post = await request(dash.port, '/api/status', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    const head = await request(dash.port, '/', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.match(await rawRequest(dash.port, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(
      await rawRequest(dash.port, 'GET http://[bad/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
      /^HTTP\/1\.1 (400|404)/,
    );
    assert.equal((await request(dash.port, '/healthz')).status, 200, 'still serving after bad requests');
  } finally {
    await dash.close();
  }
});

test('live updates: a snapshot on connect, then throttled increments; close ends the stream', async () => {
  const state = new DashboardState();
  syntheticRun(state, 'run-live');
  state.observe(stepEvent(0), Date.now());
  const dash = await startDashboard({
    host: '127.0.0.1',
    port: 0,
    state,
    metrics: createMetrics({ processMetrics: false }),
    log: silentLogger(),
    updateIntervalMs: 250,
  });
  try {
    const stream = await openEvents(dash.port);
    await stream.next(1);
    const snapshot = stream.messages[0]!;
    assert.equal(snapshot.event, 'snapshot');
    assert.deepEqual((snapshot.data as { series: { loss: { x: number[] } } }).series.loss.x, [0]);
    // A step every 5 ms for 1.5 s: the page hears about them at most 4 times a second, and gets every point once.
    const started = Date.now();
    let step = 1;
    await new Promise<void>((done) => {
      const timer = setInterval(() => {
        state.observe(stepEvent(step++), Date.now());
        if (Date.now() - started >= 1500) {
          clearInterval(timer);
          done();
        }
      }, 5);
    });
    const sent = step;
    const lossPoints = (): number[] =>
      stream.messages.flatMap((m) => (m.data as { series: { loss: { x: number[] } } }).series.loss.x);
    while (lossPoints().length < sent) await stream.next(stream.messages.length + 1);
    const updates = stream.messages.slice(1);
    assert.ok(updates.every((m) => m.event === 'update'));
    assert.deepEqual(
      lossPoints(),
      Array.from({ length: sent }, (_, i) => i),
      'every step exactly once, in order',
    );
    const seconds = (updates.at(-1)!.at - started) / 1000;
    assert.ok(updates.length <= Math.ceil(seconds * 4) + 1, `${updates.length} updates in ${seconds.toFixed(2)} s`);
    assert.ok(updates.length >= 2, 'updates keep coming while the run goes on');
    await dash.close();
    await stream.ended;
  } finally {
    await dash.close();
  }
});

// ---------------------------------------------------------------------------------------------
// The real thing: a 2-worker run watched by headless Chromium.

function spawnWorker(coordinatorPort: number, output: string[]): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'worker',
      '--coordinator',
      `ws://127.0.0.1:${coordinatorPort}`,
      '--listen',
      '127.0.0.1:0',
      '--advertise',
      '127.0.0.1',
      '--backend',
      'cpu',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, [TOKEN_ENV]: TOKEN } },
  );
  child.stdout!.on('data', (c: Buffer) => output.push(c.toString()));
  child.stderr!.on('data', (c: Buffer) => output.push(c.toString()));
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/** What app.js exposes as window.__ringtrain. */
interface PageDebug {
  lossPoints: number;
  accuracyPoints: number;
  throughputPoints: number;
  workerRows: number;
  connection: string;
}

/**
 * Read window.__ringtrain. Functions, not strings: the page's Content-Security-Policy forbids eval, and the
 * functions run in the page, so they reach its globals through globalThis (this project compiles without DOM types).
 */
const readDebug = (page: Page): Promise<PageDebug> =>
  page.evaluate(() => {
    const d = (globalThis as unknown as { __ringtrain: PageDebug }).__ringtrain;
    return {
      lossPoints: d.lossPoints,
      accuracyPoints: d.accuracyPoints,
      throughputPoints: d.throughputPoints,
      workerRows: d.workerRows,
      connection: d.connection,
    };
  });

/** The real run's /metrics: promtool-clean (when installed) and counting the 64 steps of 64 samples. */
async function checkRunMetrics(port: number): Promise<void> {
  const text = (await request(port, '/metrics')).body;
  assert.match(text, /^ringtrain_steps_total 64$/m);
  assert.match(text, /^ringtrain_samples_total 4096$/m);
  assert.match(text, /^ringtrain_step_duration_seconds_count\{rank="1"\} 64$/m);
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (lint.error === undefined) assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);
}

/** The real run's timeline: valid JSON, every phase of every step from both workers. */
function checkRunTimeline(file: string, steps: number): void {
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as TraceEvent[];
  for (const rank of [0, 1]) {
    const spans = events.filter((e) => e.ph === 'X' && e.pid === workerPid(rank));
    for (const name of ['step', 'data', 'compute', 'allreduce:reduce-scatter', 'allreduce:allgather', 'apply']) {
      assert.equal(spans.filter((e) => e.name === name).length, steps, `rank ${rank}: ${name} spans`);
    }
  }
}

test(
  'headless Chromium watches a 2-worker run: worker table, live loss chart, final state, reconnect',
  { timeout: 120_000 },
  async (t) => {
    if (!fs.existsSync(CHROMIUM)) {
      t.skip(`${CHROMIUM} not found (Debian package \`chromium\`); cannot run the browser test`);
      return;
    }
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-dashboard-'));
    const workerOutput: string[] = [];
    const workers: ChildProcess[] = [];
    let coordinator: CoordinatorHandle | undefined;
    let dash: DashboardHandle | undefined;
    let browser: Browser | undefined;
    let timeline: TimelineWriter | undefined;
    try {
      const state = new DashboardState();
      const metrics = createMetrics();
      const timelineFile = path.join(runDir, 'timeline.json');
      timeline = createTimelineWriter(timelineFile);
      coordinator = await startCoordinator({
        ...COORDINATOR_DEFAULTS,
        host: '127.0.0.1',
        port: 0,
        minWorkers: 2,
        token: TOKEN,
        train: validateTrainConfig({ model: 'mlp', epochs: 2, batchSize: 32, trainLimit: 2048, testLimit: 500 }),
        runDir,
        rendezvousTimeoutMs: 60_000,
        maxPayloadBytes: 64 * 1024 * 1024,
        checkEvery: 1,
        reportEvery: 2,
        log: silentLogger(),
        progress: createProgressView({ quiet: true }),
        observers: [state.observe, metrics.observe, timeline.observe],
      });
      dash = await startDashboard({ host: '127.0.0.1', port: 0, state, metrics, log: silentLogger() });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(m.text());
      });
      page.on('pageerror', (e) => problems.push(e.message));
      await page.goto(dash.url);
      workers.push(spawnWorker(coordinator.port, workerOutput), spawnWorker(coordinator.port, workerOutput));

      await page.waitForFunction(
        () => {
          const d = (globalThis as unknown as { __ringtrain: PageDebug }).__ringtrain;
          return d.workerRows === 2 && d.lossPoints >= 3;
        },
        null,
        { timeout: 60_000, polling: 200 },
      );
      const ranks = await page.$$eval('#worker-rows tr', (rows) =>
        rows.map((r) => (r as unknown as { dataset: { rank: string } }).dataset.rank),
      );
      assert.deepEqual(ranks, ['0', '1']);
      assert.ok(Number(await page.getAttribute('#chart-loss', 'data-points')) >= 3, 'the loss chart has data points');
      assert.equal(await page.textContent('#run-phase'), 'training');
      assert.equal(await page.locator('#chart-loss canvas').count(), 1, 'uPlot drew the chart');
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
      for (const route of ['/', '/api/status', '/metrics']) {
        assert.ok(!(await request(dash.port, route)).body.includes(TOKEN), `${route} never shows the token`);
      }
      assert.ok(!(await page.content()).includes(TOKEN), 'the page never shows the token');

      const summary = await coordinator.done;
      assert.equal(summary.outcome, 'finished', `run failed: ${summary.error ?? ''}\n${workerOutput.join('')}`);
      await page.waitForSelector('#run-phase[data-phase="finished"]', { timeout: 10_000 });
      assert.equal((await readDebug(page)).accuracyPoints, 2, 'one test accuracy point per epoch');
      assert.equal(summary.steps, 64, '2048 samples / (2 workers * 32) = 32 steps per epoch');
      assert.match(
        (await page.textContent('#summary')) ?? '',
        /^Finished: 2 epoch\(s\), 64 steps, test accuracy \d+\.\d\d%/,
      );
      assert.equal(await page.textContent('#epoch-label'), '2 / 2');
      assert.equal(await page.textContent('#kpi-accuracy'), `${(100 * summary.testAccuracy).toFixed(2)}%`);
      assert.equal(await page.locator('#event-log li[data-kind="runEnded"]').count(), 1);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-final.png'), fullPage: true });
      await checkRunMetrics(dash.port);
      await timeline.close();
      checkRunTimeline(timelineFile, 64);

      // The coordinator goes away and comes back on the same port: the page shows the last state, then reconnects.
      const port = dash.port;
      await dash.close();
      await page.waitForSelector('#connection[data-state="offline"]', { timeout: 10_000 });
      assert.equal(await page.textContent('#run-phase'), 'finished', 'the final state stays on the page');
      const restarted = new DashboardState();
      syntheticRun(restarted, 'restarted-run');
      dash = await startDashboard({ host: '127.0.0.1', port, state: restarted, metrics, log: silentLogger() });
      await page.locator('#run-title', { hasText: 'run restarte' }).waitFor({ timeout: 15_000 });
      const after = await readDebug(page);
      assert.equal(after.connection, 'live');
      assert.equal(after.lossPoints, 0, 'the new run starts a new chart');
      assert.equal(after.workerRows, 1);
      assert.deepEqual(problems, [], 'no errors in the page');
    } finally {
      await browser?.close();
      await Promise.all(workers.map(stopProcess));
      await coordinator?.close('test over');
      await dash?.close();
      await timeline?.close();
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  },
);
