/**
 * The benchmark report of `npm run bench`: its JSON shape, the targets it is judged against, and its Markdown
 * rendering. Pure functions of the measured data, so a test can check the shape without measuring anything.
 */
import type { BackendsSection } from './bench-backends.js';
import { backendsMarkdown, backendTargets } from './bench-backends-report.js';
import type { AllreduceRow, LinkRow } from './bench-allreduce.js';
import { formatAllreduce, formatBytes, formatLink } from './bench-allreduce.js';
import type { EpochPoint, ProcessMemory } from './bench-cluster.js';
import type { TensorCountResult } from './bench-memory.js';
import type { StepBenchResult } from './bench-step.js';

export const REPORT_VERSION = 1;

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
  loadAverageStart: number[];
  loadAverageEnd: number[];
}

export interface PhaseMeans {
  dataMs: number;
  computeMs: number;
  allreduceMs: number;
  applyMs: number;
}

export interface ScalingRow {
  name: string;
  /** Training processes (workers; 1 for the trainer). */
  processes: number;
  /** Median over the repetitions. */
  samplesPerSec: number;
  runs: number[];
  /** Against the single-process trainer's median. */
  speedup: number;
  efficiency: number;
  testAccuracy: number;
  phaseMeanMs?: PhaseMeans;
  /** Share of one core each process used over the middle half of the last run (coordinator first); see cpuMidShare. */
  cpuBusy?: Array<{ role: string; share: number }>;
}

export interface ScalingSection {
  model: string;
  batchSize: number;
  trainSamples: number;
  epochs: number;
  repeats: number;
  trainer: ScalingRow;
  clusters: ScalingRow[];
  /** Trainers started side by side with no communication: what this machine allows any data-parallel scheme. */
  independent: ScalingRow;
}

export interface AllreduceSection {
  sizes: number[];
  rounds: number;
  segmentBytes: number;
  link: LinkRow[];
  rows: AllreduceRow[];
  /** The same measurement with `--compression fp16` (2 workers). */
  fp16Rows: AllreduceRow[];
}

export interface TimeToAccuracyRow {
  name: string;
  workers: number;
  compression: 'none' | 'fp16';
  scaleLr: boolean;
  warmupEpochs: number;
  /** Wall seconds of the run, start of the coordinator to the end (what a user waits). */
  seconds: number;
  /** The training part of it (evaluation and start-up excluded). */
  trainSeconds: number;
  epochs: number;
  reached: boolean;
  finalAccuracy: number;
  history: EpochPoint[];
}

export interface TimeToAccuracySection {
  target: number;
  maxEpochs: number;
  trainSamples: number;
  testSamples: number;
  rows: TimeToAccuracyRow[];
}

export interface MemoryRow extends ProcessMemory {
  run: string;
  growth: number;
}

export interface MemorySection {
  /** The long run judged for leaks: a cluster training many epochs without stopping early. */
  soak: { workers: number; epochs: number; trainSamples: number; stepsPerWorker: number; seconds: number };
  processes: MemoryRow[];
  /** Peak RSS of every process of the time-to-accuracy runs. */
  peaks: MemoryRow[];
  tensors: TensorCountResult;
}

export interface StepsSection {
  lenet5: StepBenchResult;
  kerasCnn: StepBenchResult;
}

export interface Target {
  id: string;
  description: string;
  required: string;
  measured: string;
  met: boolean | null;
}

export interface BenchReport {
  version: number;
  mode: 'full' | 'quick';
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  machine: MachineInfo;
  backend: string;
  commit: string;
  scaling: ScalingSection;
  allreduce: AllreduceSection;
  timeToAccuracy: TimeToAccuracySection;
  memory: MemorySection;
  steps: StepsSection;
  /** Every available backend side by side, with PyTorch DDP (absent in reports written before it existed). */
  backends?: BackendsSection;
  targets: Target[];
}

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : 'n/a');
const num = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/** The issue's targets, judged on this report's numbers (only in full mode; a quick run judges nothing). */
export function evaluateTargets(r: Omit<BenchReport, 'targets'>): Target[] {
  const judge = (ok: boolean) => (r.mode === 'full' ? ok : null);
  const two = r.scaling.clusters.find((c) => c.processes === 2);
  const big = r.allreduce.rows.filter((row) => row.workers === 2 && row.bytes >= 4 * 1024 * 1024);
  const worst = big.reduce((a, b) => (b.ratio < a.ratio ? b : a), big[0]!);
  const worstDuplex = big.reduce((a, b) => (b.ratioDuplex < a.ratioDuplex ? b : a), big[0]!);
  const one = r.timeToAccuracy.rows.find((t) => t.workers === 1 && t.compression === 'none');
  const pair = r.timeToAccuracy.rows.find((t) => t.workers === 2 && t.compression === 'none');
  const ttaRatio = one && pair && one.reached && pair.reached ? pair.seconds / one.seconds : NaN;
  const keras = r.steps.kerasCnn.samplesPerSec;
  return [
    {
      id: 'scaling-2',
      description: '2 workers vs the single-process trainer (LeNet-5 samples/s)',
      required: '>= 1.90x (95% efficiency)',
      measured: two
        ? `${two.speedup.toFixed(2)}x (${pct(two.efficiency)}); two unconnected trainers side by side: ${r.scaling.independent.speedup.toFixed(2)}x`
        : 'n/a',
      met: judge(!!two && two.speedup >= 1.9),
    },
    {
      id: 'allreduce-busbw',
      description: 'allreduce bus bandwidth, 2 workers, 4 MB and above, vs the raw one-way link',
      required: '>= 80%',
      measured: worst
        ? `min ${pct(worst.ratio)} (at ${formatBytes(worst.bytes)}); vs the link carrying both ways at once: min ${pct(worstDuplex.ratioDuplex)}`
        : 'n/a',
      met: judge(!!worst && worst.ratio >= 0.8),
    },
    {
      id: 'time-to-accuracy',
      description: `time to ${(100 * r.timeToAccuracy.target).toFixed(1)}% test accuracy, 2 workers vs 1`,
      required: '<= 60%',
      measured: one && pair ? `${num(pair.seconds, 1)} s vs ${num(one.seconds, 1)} s = ${pct(ttaRatio)}` : 'n/a',
      met: judge(Number.isFinite(ttaRatio) && ttaRatio <= 0.6),
    },
    {
      id: 'keras-cnn',
      description: 'keras-cnn training, one process, wasm, batch 64',
      required: '>= 200 samples/s',
      measured: `${num(keras)} samples/s (${r.steps.kerasCnn.backend})`,
      met: judge(keras >= 200),
    },
    {
      id: 'memory-flat',
      description: 'no leak over a long run: tfjs tensor count constant, RSS growth of every process under 10%',
      required: 'flat',
      measured:
        `${r.memory.tensors.tensorsStart} -> ${r.memory.tensors.tensorsEnd} tensors over ${r.memory.tensors.steps} steps; ` +
        `largest RSS growth ${pct(Math.max(...r.memory.processes.map((p) => p.growth)))}`,
      met: judge(r.memory.tensors.flat && r.memory.processes.every((p) => !(p.growth > 0.1))),
    },
    ...(r.backends ? backendTargets(r.backends, r.mode === 'full') : []),
  ];
}

function phases(p?: PhaseMeans): string {
  return p ? `${p.computeMs.toFixed(1)} / ${p.allreduceMs.toFixed(1)} / ${p.applyMs.toFixed(1)}` : '';
}

/** '91, 90 + coordinator 6 = 187%': every training process's share of a core, and their sum against the machine's cores. */
function cpuBusy(busy?: ScalingRow['cpuBusy']): string {
  if (!busy || busy.length === 0) return '';
  const percent = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(0) : 'n/a');
  const trainers = busy
    .filter((b) => b.role !== 'coordinator')
    .map((b) => percent(b.share))
    .join(', ');
  const coordinator = busy.find((b) => b.role === 'coordinator');
  const total = busy.reduce((sum, b) => sum + b.share, 0);
  return `${trainers}${coordinator ? ` + coordinator ${percent(coordinator.share)}` : ''} = ${percent(total)}%`;
}

function scalingTable(s: ScalingSection): string {
  const rows = [s.trainer, ...s.clusters, s.independent];
  const head =
    '| run | processes | samples/s | speed-up | efficiency | ms/step compute / allreduce / apply | CPU busy, % of a core | runs (samples/s) |\n' +
    '|---|---:|---:|---:|---:|---:|---:|---|';
  return [
    head,
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.processes} | ${num(r.samplesPerSec)} | ${r.speedup.toFixed(2)}x | ${pct(r.efficiency)} | ${phases(r.phaseMeanMs)} | ${cpuBusy(r.cpuBusy)} | ${r.runs.map((x) => x.toFixed(0)).join(', ')} |`,
    ),
  ].join('\n');
}

function ttaTable(t: TimeToAccuracySection): string {
  const head =
    '| run | workers | lr schedule | compression | seconds | training seconds | epochs | final accuracy | test accuracy per epoch |\n|---|---:|---|---|---:|---:|---:|---:|---|';
  return [
    head,
    ...t.rows.map((r) => {
      const warmup = r.warmupEpochs > 0 ? `${r.warmupEpochs}-epoch warmup` : 'no warmup';
      const lr = r.scaleLr ? `scaled x${r.workers}, ${warmup}` : 'base';
      const seconds = `${num(r.seconds, 1)}${r.reached ? '' : ' (not reached)'}`;
      const history = r.history.map((h) => `${(100 * h.testAccuracy).toFixed(2)}`).join(', ');
      return `| ${r.name} | ${r.workers} | ${lr} | ${r.compression} | ${seconds} | ${num(r.trainSeconds, 1)} | ${r.epochs} | ${(100 * r.finalAccuracy).toFixed(2)}% | ${history} |`;
    }),
  ].join('\n');
}

function memoryTables(m: MemorySection): string {
  const head =
    '| run | process | peak RSS MiB | top of RSS, 2nd quarter MiB | top of RSS, last quarter MiB | growth | CPU s |\n|---|---|---:|---:|---:|---:|---:|';
  const line = (p: MemoryRow) =>
    `| ${p.run} | ${p.role} | ${num(p.peakRssMiB)} | ${num(p.rssMidMiB)} | ${num(p.rssEndMiB)} | ${pct(p.growth)} | ${num(p.cpuSeconds, 1)} |`;
  const s = m.soak;
  const procs = [
    `Long run: ${s.workers} workers, ${s.epochs} epochs of ${s.trainSamples} samples (${s.stepsPerWorker} steps per worker), ${num(s.seconds)} s.`,
    '',
    head,
    ...m.processes.map(line),
    '',
    'Peaks of the time-to-accuracy runs:',
    '',
    head,
    ...m.peaks.map(line),
  ];
  const t = m.tensors;
  const tensorHead = '| step | tfjs tensors | tfjs MiB | JS heap MiB |\n|---:|---:|---:|---:|';
  const tensorRows = t.samples.map(
    (s) => `| ${s.step} | ${s.numTensors} | ${(s.numBytes / 2 ** 20).toFixed(2)} | ${s.heapUsedMiB.toFixed(1)} |`,
  );
  return [
    ...procs,
    '',
    `Tensor counts: two ${t.model} replicas training in one process on an in-memory ring of 2 with the workers' ` +
      `step (allreduce, apply, parameter hash, periodic evaluation), ${t.steps} steps on ${t.backend}: ${t.flat ? 'flat' : 'NOT flat'}.`,
    '',
    tensorHead,
    ...tensorRows,
  ].join('\n');
}

function stepsTable(s: StepsSection): string {
  const rows = [s.lenet5, s.kerasCnn];
  const head = '| model | backend | batch | samples/s | ms/step |\n|---|---|---:|---:|---:|';
  const table = [
    head,
    ...rows.map(
      (r) => `| ${r.model} | ${r.backend} | ${r.batchSize} | ${num(r.samplesPerSec)} | ${r.msPerStep.toFixed(1)} |`,
    ),
  ].join('\n');
  const kernels = rows
    .map((r) => {
      const top = (r.kernels ?? [])
        .slice(0, 6)
        .map((k) => `${k.kernel} ${pct(k.share)}`)
        .join(', ');
      return `- ${r.model}${r.compiled ? ' (profiled op by op: the timed, compiled step is one session call)' : ''}: ${top}`;
    })
    .join('\n');
  return `${table}\n\nWhere a training step's kernel time goes (tf.profile):\n\n${kernels}`;
}

export function renderMarkdown(r: BenchReport): string {
  const m = r.machine;
  const a = r.allreduce;
  const mark = (met: boolean | null) => (met === null ? '(not judged in quick mode)' : met ? 'met' : '**not met**');
  return `# ringtrain benchmark report

${r.startedAt} · ${r.mode} run, ${num(r.durationSeconds)} s · commit ${r.commit}

Machine: ${m.cores} cores (${m.cpuModel}), ${num(m.memoryGiB)} GiB, Node.js ${m.node} on ${m.platform}; TensorFlow.js backend **${r.backend}**.
Load average (1, 5, 15 min) at the start ${m.loadAverageStart.map((x) => x.toFixed(2)).join(', ')}, at the end ${m.loadAverageEnd.map((x) => x.toFixed(2)).join(', ')}.

## Targets

| target | required | measured | |
|---|---|---|---|
${r.targets.map((t) => `| ${t.description} | ${t.required} | ${t.measured} | ${mark(t.met)} |`).join('\n')}

## Scaling

${r.scaling.model}, batch ${r.scaling.batchSize} per process, ${r.scaling.epochs} epoch of ${r.scaling.trainSamples} samples; samples/s of training time
(evaluation excluded), median of ${r.scaling.repeats} runs; speed-up and efficiency against the single-process trainer.
The last row runs ${r.scaling.independent.processes} trainers at once with no communication at all: the ceiling this machine sets for any
data-parallel scheme. A cluster of 4 puts 4 workers on ${m.cores} cores. CPU busy: the share of one core each process
used over the middle half of the last run (from /proc; the machine has ${100 * m.cores}%): a cluster near that total is
short of CPU, not waiting on its links.

${scalingTable(r.scaling)}

## Allreduce

\`ringAllreduce\` (average) between real processes connected by the workers' RingTransport, nccl-tests style: time per allreduce
(slowest rank, median of ${a.rounds} rounds), algbw = bytes / time, busbw = algbw x 2(n-1)/n. Pipelining segments of
${formatBytes(a.segmentBytes)}. Next to it, the raw ws link between two processes measured in the same run, with messages of the
same size: one way, and per direction with both ways carrying data at once (what every ring link does).

${formatLink(a.link)}

${formatAllreduce(a.rows)}

With \`--compression fp16\` (values travel as float16; algbw counts the float32 buffer):

${formatAllreduce(a.fp16Rows)}

## Time to ${(100 * r.timeToAccuracy.target).toFixed(1)}% test accuracy

LeNet-5 on ${r.timeToAccuracy.trainSamples} MNIST training samples, evaluated on ${r.timeToAccuracy.testSamples} test samples after every epoch,
at most ${r.timeToAccuracy.maxEpochs} epochs; batch 64 per worker.

${ttaTable(r.timeToAccuracy)}

## Memory

Resident memory of every process, sampled from /proc every 250 ms; growth compares the top of the RSS saw in the last
quarter of the run with the second quarter (the first is start-up).

${memoryTables(r.memory)}

${r.backends ? `## Backends side by side, and PyTorch DDP\n\n${backendsMarkdown(r.backends)}\n\n` : ''}## Single-process step speed

${stepsTable(r.steps)}

## Reproduce

\`\`\`
npm ci && npm run build
npm run bench            # this report (bench/results/latest.md and .json); npm run bench:quick checks its shape only
\`\`\`
`;
}
