/**
 * Runs after the fact, in headless Chromium: a real 2-worker run with one worker slowed on purpose
 * (--debug-delay-ms) is recorded in its folder; `ringtrain dashboard --run-dir` (a real process) shows it finished,
 * with the slowed worker holding the largest share of the waiting; report.html opens from disk with the network
 * blocked; two runs show side by side; a model trained by `ringtrain train` classifies a digit drawn with the mouse.
 * Screenshots go to docs/screenshots/.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { COORDINATOR_DEFAULTS, startCoordinator, type ClusterSummary } from '../coordinator/start.js';
import { startObservability } from '../coordinator/observability.js';
import type { RunEvent } from '../coordinator/events.js';
import { TOKEN_ENV } from '../shared/auth.js';
import { validateTrainConfig } from '../shared/config.js';
import { silentLogger } from '../shared/log.js';
import { createProgressView } from '../shared/cli/progress.js';

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
const TOKEN = 'dashboard-runs-test-secret';
const SLOW_MS = 400;

function spawnCli(args: string[], output: string[]): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [TOKEN_ENV]: TOKEN },
  });
  child.stdout!.on('data', (c: Buffer) => output.push(c.toString()));
  child.stderr!.on('data', (c: Buffer) => output.push(c.toString()));
  return child;
}

function spawnWorker(port: number, output: string[], delayMs = 0): ChildProcess {
  const args = ['worker', '--coordinator', `ws://127.0.0.1:${port}`, '--listen', '127.0.0.1:0'];
  // Generous liveness limits: on a busy machine a worker's first steps can hold its event loop for many seconds.
  const patient = ['--heartbeat-ms', '2000', '--heartbeat-misses', '60'];
  return spawnCli(
    [...args, '--advertise', '127.0.0.1', '--backend', 'cpu', ...patient, '--debug-delay-ms', String(delayMs)],
    output,
  );
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
}

/** Start `ringtrain dashboard` and wait for the address it prints. */
async function startDashboardCli(args: string[]): Promise<{ child: ChildProcess; url: string; output: string[] }> {
  const output: string[] = [];
  const child = spawnCli(['dashboard', '--port', '0', ...args], output);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no dashboard address: ${output.join('')}`)), 60_000);
    const look = (): void => {
      const m = /dashboard (http:\/\/\S+)/.exec(output.join(''));
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', look);
    child.once('exit', () => reject(new Error(`dashboard exited: ${output.join('')}`)));
  });
  return { child, url, output };
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      })
      .on('error', reject);
  });
}

/** A real 2-worker run whose first worker (rank 0) sleeps `delayMs` before every step; its folder and summary. */
async function realRun(runDir: string, delayMs: number, epochs = 2): Promise<ClusterSummary> {
  const output: string[] = [];
  const workers: ChildProcess[] = [];
  const obs = await startObservability({
    dashboardHost: '127.0.0.1',
    dashboardPort: 0,
    runDir,
    log: silentLogger(),
  });
  let joined!: () => void;
  const firstJoined = new Promise<void>((resolve) => (joined = resolve));
  const onJoin = (e: RunEvent): void => void (e.kind === 'workerJoined' && joined());
  const coordinator = await startCoordinator({
    ...COORDINATOR_DEFAULTS,
    host: '127.0.0.1',
    port: 0,
    minWorkers: 2,
    token: TOKEN,
    train: validateTrainConfig({ model: 'mlp', epochs, batchSize: 32, trainLimit: 768, testLimit: 300 }),
    runDir,
    summaryJson: path.join(runDir, 'summary.json'),
    rendezvousTimeoutMs: 60_000,
    // The machine may be busy: a worker's first steps can hold its event loop for seconds.
    heartbeatMs: 2000,
    heartbeatMisses: 60,
    stallAbortMs: 300_000,
    reportEvery: 2,
    log: silentLogger(),
    progress: createProgressView({ quiet: true }),
    observers: [...obs.observers, onJoin],
  });
  try {
    // Ranks follow the order of joining: the slowed worker joins first and becomes rank 0.
    workers.push(spawnWorker(coordinator.port, output, delayMs));
    await firstJoined;
    workers.push(spawnWorker(coordinator.port, output));
    const summary = await coordinator.done;
    assert.equal(summary.outcome, 'finished', `run failed: ${summary.error ?? ''}\n${output.join('')}`);
    return summary;
  } finally {
    await Promise.all(workers.map(stopProcess));
    await coordinator.close('test over');
    await obs.close();
  }
}

async function newPage(browser: Browser): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  return { page, problems };
}

async function checkFinishedRunPage(page: Page, summary: ClusterSummary): Promise<void> {
  await page.waitForSelector('#run-phase[data-phase="finished"]', { timeout: 20_000 });
  await page.waitForSelector('#wait-rows tr', { timeout: 10_000 });
  assert.equal(await page.textContent('#epoch-label'), '2 / 2');
  assert.equal(await page.locator('#worker-rows tr').count(), 2, 'both workers are listed');
  assert.equal(await page.locator('#event-log li[data-kind="epochFinished"]').count(), 2);
  assert.match((await page.textContent('#summary')) ?? '', /^Finished: 2 epoch\(s\), 24 steps/);
  assert.equal(await page.textContent('#kpi-accuracy'), `${(100 * summary.testAccuracy).toFixed(2)}%`);
  const top = await page.getAttribute('#wait-rows tr:first-child', 'data-rank');
  assert.equal(top, '0', 'the slowed worker heads the waiting table');
  assert.match((await page.textContent('#waits-headline')) ?? '', /^Rank 0 \(.*\) entered the allreduce last/);
  assert.equal(await page.locator('#chart-loss canvas').count(), 1, 'the loss chart is drawn');
}

test(
  'a finished run from its folder, the slowed worker holding the ring, the offline report, runs side by side',
  { timeout: 600_000 },
  async (t) => {
    if (!fs.existsSync(CHROMIUM)) return void t.skip(`${CHROMIUM} not found`);
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ringtrain-runs-'));
    const runDir = path.join(root, 'runs', 'slowed');
    const children: ChildProcess[] = [];
    let browser: Browser | undefined;
    try {
      const summary = await realRun(runDir, SLOW_MS);
      // The summary says who made the others wait: rank 0, by far.
      const shares = new Map(summary.waits.map((w) => [w.rank, w.share]));
      assert.ok(shares.get(0)! > 0.6, `rank 0's share ${shares.get(0)} of the waiting`);
      assert.ok(shares.get(0)! > shares.get(1)!);
      const onDisk = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8')) as ClusterSummary;
      assert.deepEqual(
        onDisk.waits.map((w) => w.rank),
        [0, 1],
      );
      assert.ok(fs.existsSync(path.join(runDir, 'events.jsonl')) && fs.existsSync(path.join(runDir, 'report.html')));

      fs.mkdirSync(SHOTS, { recursive: true });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
      const one = await startDashboardCli(['--run-dir', runDir]);
      children.push(one.child);
      const status = JSON.parse((await get(`${one.url}api/status`)).body) as { run: { phase: string } };
      assert.equal(status.run.phase, 'finished');
      const metrics = (await get(`${one.url}metrics`)).body;
      const share0 = Number(/^ringtrain_wait_share_ratio\{rank="0"\} (\S+)$/m.exec(metrics)?.[1]);
      const share1 = Number(/^ringtrain_wait_share_ratio\{rank="1"\} (\S+)$/m.exec(metrics)?.[1]);
      assert.ok(share0 > share1, `/metrics: rank 0 ${share0} > rank 1 ${share1}`);
      if (spawnSync('promtool', ['--version']).status === 0) {
        const check = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
        assert.equal(check.status, 0, check.stdout + check.stderr);
      }
      const timeline = await get(`${one.url}timeline.json`);
      assert.equal(timeline.status, 200);
      const trace = JSON.parse(timeline.body) as { ph: string; pid: number; name: string }[];
      assert.deepEqual(
        [...new Set(trace.filter((e) => e.name === 'step').map((e) => e.pid))].sort(),
        [1, 2],
        'one track per worker',
      );

      const { page, problems } = await newPage(browser);
      await page.goto(one.url);
      await checkFinishedRunPage(page, summary);
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-finished-run.png'), fullPage: true });
      await page.locator('#waits-card').screenshot({ path: path.join(SHOTS, 'dashboard-waits.png') });
      assert.equal(await page.isVisible('#timeline-link'), true, 'the timeline can be downloaded');
      assert.deepEqual(problems, [], 'no errors in the page');

      // report.html from disk, with every network request refused.
      const offline = await browser.newContext({ offline: true, viewport: { width: 1400, height: 1000 } });
      let requests = 0;
      await offline.route(/^(?!file:)/, (route) => {
        requests++;
        return route.abort();
      });
      const report = await offline.newPage();
      const reportProblems: string[] = [];
      report.on('pageerror', (e) => reportProblems.push(e.message));
      await report.goto(pathToFileURL(path.join(runDir, 'report.html')).href);
      await checkFinishedRunPage(report, summary);
      assert.equal(requests, 0, 'the report asks the network for nothing');
      assert.deepEqual(reportProblems, []);
      await report.screenshot({ path: path.join(SHOTS, 'report.png'), fullPage: true });
      await offline.close();

      // A folder of runs: the slowed run beside one where nobody is slowed.
      await realRun(path.join(root, 'runs', 'steady'), 0, 1);
      const many = await startDashboardCli(['--run-dir', path.join(root, 'runs')]);
      children.push(many.child);
      await page.goto(many.url);
      await page.waitForSelector('#run-rows tr[data-run="steady"]', { timeout: 15_000 });
      assert.equal(await page.locator('#run-rows tr').count(), 2);
      assert.equal(await page.getAttribute('#runs-chart-loss', 'data-series'), '2');
      await page.screenshot({ path: path.join(SHOTS, 'dashboard-runs.png'), fullPage: true });
      await page.click('#run-rows tr[data-run="slowed"] a');
      await checkFinishedRunPage(page, summary);
    } finally {
      await browser?.close();
      await Promise.all(children.map(stopProcess));
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
);
