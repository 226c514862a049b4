/**
 * `npm run bench:quick`: the benchmark runs end to end with tiny settings and writes a Markdown and a JSON report of
 * the full report's shape. Nothing here asserts a speed; the targets are judged only by a full run, which the second
 * test checks on the report's own pure functions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { evaluateTargets, renderMarkdown, REPORT_VERSION, type BenchReport } from '../bench/bench-report.js';
import { backendTargets } from '../bench/bench-backends-report.js';
import type { BackendModelRow, BackendsSection } from '../bench/bench-backends.js';

const BENCH = fileURLToPath(new URL('../bench/bench.js', import.meta.url));

function runQuick(outDir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BENCH, '--quick', '--backend', 'wasm', '--out', outDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bench --quick timed out:\n${output}`));
    }, 540_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`bench --quick exited with ${code}:\n${output}`));
    });
  });
}

const finite = (x: unknown, label: string) =>
  assert.ok(typeof x === 'number' && Number.isFinite(x), `${label}: ${String(x)}`);
const positive = (x: unknown, label: string) => assert.ok(typeof x === 'number' && x > 0, `${label}: ${String(x)}`);

function checkShape(r: BenchReport): void {
  assert.equal(r.version, REPORT_VERSION);
  assert.equal(r.mode, 'quick');
  assert.equal(r.machine.cores, os.cpus().length);
  assert.equal(r.backend, 'wasm');
  assert.equal(r.machine.loadAverageStart.length, 3);

  const s = r.scaling;
  positive(s.trainer.samplesPerSec, 'trainer samples/s');
  assert.equal(s.trainer.speedup, 1);
  assert.deepEqual(
    s.clusters.map((c) => c.processes),
    [1, 2, 4],
  );
  for (const c of [...s.clusters, s.independent]) {
    positive(c.samplesPerSec, `${c.name} samples/s`);
    assert.ok(
      Math.abs(c.speedup - c.samplesPerSec / s.trainer.samplesPerSec) < 1e-9,
      `${c.name} speed-up against the trainer`,
    );
    assert.ok(Math.abs(c.efficiency - c.speedup / c.processes) < 1e-9, `${c.name} efficiency`);
    assert.equal(c.runs.length, s.repeats);
  }
  for (const c of s.clusters)
    for (const k of ['computeMs', 'allreduceMs', 'applyMs'] as const) finite(c.phaseMeanMs?.[k], `${c.name} ${k}`);
  for (const c of s.clusters) {
    assert.deepEqual(
      c.cpuBusy?.map((b) => b.role),
      ['coordinator', ...new Array<string>(c.processes).fill('worker')],
      `${c.name}: CPU of every process`,
    );
    for (const b of c.cpuBusy ?? [])
      assert.ok(b.share >= 0 && b.share <= os.cpus().length, `${c.name} ${b.role} CPU share ${b.share}`);
  }
  assert.deepEqual(
    s.independent.cpuBusy?.map((b) => b.role),
    ['trainer', 'trainer'],
  );

  const a = r.allreduce;
  assert.deepEqual(
    a.link.map((l) => l.bytes),
    a.sizes,
  );
  for (const l of a.link) {
    positive(l.mbPerSec, 'link one way');
    positive(l.duplexMbPerSec, 'link both ways');
  }
  assert.deepEqual(
    a.rows.map((x) => `${x.workers}/${x.bytes}`),
    [2, 3, 4].flatMap((n) => a.sizes.map((b) => `${n}/${b}`)),
  );
  assert.deepEqual(
    a.fp16Rows.map((x) => `${x.workers}/${x.bytes}`),
    a.sizes.map((b) => `2/${b}`),
  );
  for (const x of [...a.rows, ...a.fp16Rows]) {
    assert.equal(
      x.verified,
      true,
      `allreduce of ${x.bytes} bytes on ${x.workers} workers gave exact, identical results`,
    );
    positive(x.ms, 'allreduce time');
    assert.ok(
      Math.abs(x.algbwMbPerSec - x.bytes / 1e6 / (x.ms / 1000)) < 1e-6 * x.algbwMbPerSec,
      'algbw = bytes / time',
    );
    assert.ok(
      Math.abs(x.busbwMbPerSec - (x.algbwMbPerSec * 2 * (x.workers - 1)) / x.workers) < 1e-9 * x.busbwMbPerSec,
      'busbw = algbw * 2(n-1)/n',
    );
    assert.ok(Math.abs(x.ratio - x.busbwMbPerSec / x.linkMbPerSec) < 1e-9, 'ratio = busbw / link');
  }

  const t = r.timeToAccuracy;
  assert.deepEqual(
    t.rows.map((x) => [x.workers, x.compression]),
    [
      [1, 'none'],
      [2, 'none'],
      [2, 'fp16'],
    ],
  );
  for (const x of t.rows) {
    positive(x.seconds, `${x.name} seconds`);
    assert.equal(x.history.length, x.epochs);
    assert.equal(x.reached, x.finalAccuracy >= t.target);
  }

  const m = r.memory;
  assert.deepEqual(
    m.processes.map((p) => p.role),
    ['coordinator', 'worker', 'worker'],
  );
  assert.equal(m.soak.workers, 2);
  positive(m.soak.stepsPerWorker, 'long-run steps');
  assert.deepEqual(
    m.peaks.map((p) => `${p.run}/${p.role}`),
    [
      '1 worker/coordinator',
      '1 worker/worker',
      '2 workers/coordinator',
      '2 workers/worker',
      '2 workers/worker',
      '2 workers, fp16/coordinator',
      '2 workers, fp16/worker',
      '2 workers, fp16/worker',
    ],
  );
  for (const p of [...m.processes, ...m.peaks]) {
    positive(p.peakRssMiB, `${p.run} ${p.role} peak RSS`);
    assert.ok(
      p.rssEndMiB <= p.peakRssMiB + 1e-9 && p.rssMidMiB <= p.peakRssMiB + 1e-9,
      `${p.run} ${p.role}: quarter tops within the peak`,
    );
    const growth = p.rssEndMiB / p.rssMidMiB - 1;
    assert.ok(
      Number.isNaN(growth) ? Number.isNaN(p.growth) : Math.abs(p.growth - growth) < 1e-9,
      'growth = last quarter / second quarter - 1',
    );
  }
  assert.ok(m.tensors.samples.length >= 2);
  assert.equal(
    m.tensors.flat,
    m.tensors.samples.every((x) => x.numTensors === m.tensors.tensorsStart),
  );
  assert.equal(m.tensors.flat, true, 'the training step leaks no tensors');

  assert.equal(r.steps.lenet5.model, 'lenet5');
  assert.equal(r.steps.kerasCnn.model, 'keras-cnn');
  assert.equal(r.steps.kerasCnn.backend, 'wasm');
  for (const st of [r.steps.lenet5, r.steps.kerasCnn]) {
    positive(st.samplesPerSec, `${st.model} samples/s`);
    assert.ok((st.kernels ?? []).length > 0, `${st.model} kernel profile`);
  }

  const b = r.backends!;
  assert.ok(b, 'the backends section');
  const wasm = b.rows.find((x) => x.backend === 'wasm');
  assert.ok(wasm?.available, 'wasm is measured');
  for (const row of b.rows.filter((x) => x.available)) {
    assert.deepEqual(
      row.models.map((m) => m.model),
      ['lenet5', 'keras-cnn'],
    );
    for (const m of row.models) {
      for (const k of ['single', 'cluster', 'ceiling'] as const) positive(m[k], `${row.backend} ${m.model} ${k}`);
      assert.ok(Math.abs(m.ofCeiling - m.cluster / m.ceiling) < 1e-9, 'cluster / ceiling');
      assert.ok(m.phaseShare > 0 && m.phaseShare <= 1.05, `${row.backend} ${m.model} phase share ${m.phaseShare}`);
    }
  }
  for (const row of b.rows.filter((x) => !x.available)) assert.ok(row.detail.length > 0, `${row.backend}: why not`);
  assert.equal(b.pytorch.ran, false, 'quick mode does not run PyTorch');
  assert.deepEqual(
    r.targets.map((x) => x.id),
    [
      'scaling-2',
      'allreduce-busbw',
      'time-to-accuracy',
      'keras-cnn',
      'memory-flat',
      'native-vs-wasm',
      'native-vs-ddp',
      'ceiling-tensorflow',
      'phases-tensorflow',
      'ceiling-wasm',
      'phases-wasm',
    ],
  );
  assert.ok(
    r.targets.every((x) => x.met === null),
    'a quick run judges no target',
  );
}

test('bench --quick writes a Markdown and a JSON report with every section', { timeout: 600_000 }, async () => {
  const out = await fs.mkdtemp(path.join(os.tmpdir(), 'ringtrain-bench-test-'));
  try {
    const printed = await runQuick(out);
    const files = await fs.readdir(out);
    assert.ok(files.includes('latest.md') && files.includes('latest.json'), files.join(', '));
    assert.equal(files.filter((f) => /-quick-\d+cores-wasm\.(md|json)$/.test(f)).length, 2, files.join(', '));
    const report = JSON.parse(await fs.readFile(path.join(out, 'latest.json'), 'utf8')) as BenchReport;
    checkShape(report);
    const markdown = await fs.readFile(path.join(out, 'latest.md'), 'utf8');
    assert.equal(markdown, renderMarkdown(report));
    for (const heading of [
      '## Targets',
      '## Scaling',
      '## Allreduce',
      '## Time to 50.0% test accuracy',
      '## Memory',
      '## Backends side by side, and PyTorch DDP',
      '## Single-process step speed',
      '## Reproduce',
    ]) {
      assert.ok(markdown.includes(heading), heading);
    }
    assert.match(printed, /report: .*\.md/);
  } finally {
    await fs.rm(out, { recursive: true, force: true });
  }
});

test('the targets are judged on a full run: each passes or fails on its threshold', async () => {
  const base: Omit<BenchReport, 'targets'> = JSON.parse(JSON.stringify(syntheticReport()));
  const judged = (mutate: (r: Omit<BenchReport, 'targets'>) => void) => {
    const r: Omit<BenchReport, 'targets'> = JSON.parse(JSON.stringify(base));
    mutate(r);
    return Object.fromEntries(evaluateTargets(r).map((t) => [t.id, t.met]));
  };
  assert.deepEqual(
    judged(() => undefined),
    { 'scaling-2': true, 'allreduce-busbw': true, 'time-to-accuracy': true, 'keras-cnn': true, 'memory-flat': true },
  );
  assert.equal(
    judged((r) => {
      r.scaling.clusters[1]!.speedup = 1.89;
    })['scaling-2'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.allreduce.rows[1]!.ratio = 0.79;
    })['allreduce-busbw'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.allreduce.rows[0]!.ratio = 0.1;
    })['allreduce-busbw'],
    true,
    'sizes below 4 MB do not count',
  );
  assert.equal(
    judged((r) => {
      r.timeToAccuracy.rows[1]!.seconds = 61;
    })['time-to-accuracy'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.timeToAccuracy.rows[1]!.reached = false;
    })['time-to-accuracy'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.steps.kerasCnn.samplesPerSec = 199;
    })['keras-cnn'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.memory.tensors.flat = false;
    })['memory-flat'],
    false,
  );
  assert.equal(
    judged((r) => {
      r.memory.processes[0]!.growth = 0.2;
    })['memory-flat'],
    false,
  );
  assert.ok(
    judged((r) => {
      r.mode = 'quick';
    })['scaling-2'] === null,
  );
});

test("the scaling table shows each process's share of a core and their sum against the machine", () => {
  const base = syntheticReport();
  base.scaling.clusters[1]!.cpuBusy = [
    { role: 'coordinator', share: 0.06 },
    { role: 'worker', share: 0.91 },
    { role: 'worker', share: 0.9 },
  ];
  const markdown = renderMarkdown({ ...base, targets: evaluateTargets(base) });
  assert.match(markdown, /\| 2 \| 2 \| .* \| 91, 90 \+ coordinator 6 = 187% \|/);
  assert.match(markdown, /the machine has 200%/);
});

/** A minimal full-mode report that meets every target. */
function syntheticReport(): Omit<BenchReport, 'targets'> {
  const MB = 1024 * 1024;
  const scalingRow = (processes: number, speedup: number) => ({
    name: `${processes}`,
    processes,
    samplesPerSec: 1000 * speedup,
    runs: [1000 * speedup],
    speedup,
    efficiency: speedup / processes,
    testAccuracy: 0.9,
  });
  const allreduceRow = (bytes: number, ratio: number) => ({
    workers: 2,
    bytes,
    iterations: 2,
    ms: 1,
    algbwMbPerSec: 1,
    busbwMbPerSec: 1,
    linkMbPerSec: 1,
    ratio,
    linkDuplexMbPerSec: 1,
    ratioDuplex: ratio,
    verified: true,
    cpuPerRank: 1,
    faultsPerMiB: 0,
  });
  const tta = (workers: number, seconds: number) => ({
    name: `${workers}`,
    workers,
    compression: 'none' as const,
    scaleLr: workers > 1,
    warmupEpochs: 1,
    seconds,
    trainSeconds: seconds,
    epochs: 3,
    reached: true,
    finalAccuracy: 0.991,
    history: [],
  });
  const step = (model: string, samplesPerSec: number) => ({
    model,
    backend: 'wasm',
    batchSize: 64,
    steps: 1,
    samplesPerSec,
    msPerStep: 1,
  });
  return {
    version: REPORT_VERSION,
    mode: 'full',
    startedAt: '',
    finishedAt: '',
    durationSeconds: 1,
    machine: {
      cores: 2,
      cpuModel: 'x',
      memoryGiB: 1,
      node: '20',
      platform: 'linux',
      loadAverageStart: [0, 0, 0],
      loadAverageEnd: [0, 0, 0],
    },
    backend: 'wasm',
    commit: 'x',
    scaling: {
      model: 'lenet5',
      batchSize: 64,
      trainSamples: 1,
      epochs: 1,
      repeats: 1,
      trainer: scalingRow(1, 1),
      clusters: [scalingRow(1, 0.98), scalingRow(2, 1.9), scalingRow(4, 1.5)],
      independent: scalingRow(2, 1.95),
    },
    allreduce: {
      sizes: [MB, 4 * MB, 64 * MB],
      rounds: 1,
      segmentBytes: MB,
      link: [],
      rows: [allreduceRow(MB, 0.5), allreduceRow(4 * MB, 0.8), allreduceRow(64 * MB, 0.9)],
      fp16Rows: [],
    },
    timeToAccuracy: {
      target: 0.99,
      maxEpochs: 10,
      trainSamples: 60000,
      testSamples: 10000,
      rows: [tta(1, 100), tta(2, 60)],
    },
    memory: {
      soak: { workers: 2, epochs: 10, trainSamples: 12800, stepsPerWorker: 1000, seconds: 60 },
      processes: [
        {
          run: '1',
          role: 'worker',
          peakRssMiB: 100,
          rssMidMiB: 100,
          rssEndMiB: 105,
          samples: 10,
          cpuSeconds: 1,
          cpuMidShare: 0.9,
          growth: 0.05,
        },
      ],
      peaks: [],
      tensors: {
        backend: 'wasm',
        model: 'lenet5',
        steps: 10,
        samples: [],
        tensorsStart: 64,
        tensorsEnd: 64,
        flat: true,
      },
    },
    steps: { lenet5: step('lenet5', 3000), kerasCnn: step('keras-cnn', 200) },
  };
}

test('the backend targets: native vs wasm, vs PyTorch DDP, cluster vs ceiling and phase share, each on its threshold', () => {
  const model = (single: number, cluster: number, ceiling: number, phaseShare: number): BackendModelRow => ({
    model: 'lenet5',
    trainSamples: 1000,
    single,
    singleRuns: [single],
    cluster,
    clusterRuns: [cluster],
    ceiling,
    ceilingRuns: [ceiling],
    ofCeiling: cluster / ceiling,
    phaseShare,
  });
  const section = (tfSingle: number, tfCluster: number, ddp: number, share: number): BackendsSection => ({
    repeats: 1,
    batchSize: 64,
    rows: [
      {
        backend: 'tensorflow',
        available: true,
        detail: '',
        singleThreads: 2,
        clusterThreads: 1,
        models: [model(tfSingle, tfCluster, 10_000, share)],
      },
      {
        backend: 'wasm',
        available: true,
        detail: '',
        singleThreads: 1,
        clusterThreads: 1,
        models: [model(4000, 7000, 7200, 0.97)],
      },
    ],
    pytorch: { ran: true, note: '', samplesPerSec: ddp },
  });
  const met = (s: BackendsSection) => Object.fromEntries(backendTargets(s, true).map((t) => [t.id, t.met]));
  assert.deepEqual(met(section(5600, 9600, 9000, 0.96)), {
    'native-vs-wasm': true,
    'native-vs-ddp': true,
    'ceiling-tensorflow': true,
    'phases-tensorflow': true,
    'ceiling-wasm': true,
    'phases-wasm': true,
  });
  const failing = met(section(5500, 9400, 9500, 0.9));
  assert.equal(failing['native-vs-wasm'], false, '5500 / 4000 < 1.4');
  assert.equal(failing['native-vs-ddp'], false, '9400 < 9500');
  assert.equal(failing['ceiling-tensorflow'], false, '9400 / 10000 < 95%');
  assert.equal(failing['phases-tensorflow'], false, '90% < 95%');
  const noNative = section(1, 1, 1, 1);
  noNative.rows[0] = { ...noNative.rows[0]!, available: false, detail: 'not set up', models: [] };
  const t = backendTargets(noNative, true);
  assert.equal(t.find((x) => x.id === 'native-vs-wasm')!.met, false);
  assert.match(t.find((x) => x.id === 'native-vs-wasm')!.measured, /tensorflow not available: not set up/);
  assert.ok(backendTargets(section(5600, 9600, 9000, 0.96), false).every((x) => x.met === null));
});
