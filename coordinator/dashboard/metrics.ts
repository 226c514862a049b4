/**
 * Prometheus metrics of a run, fed by the coordinator's run events. Names follow Prometheus conventions: the
 * `ringtrain_` prefix, base units (`_seconds`, `_bytes`, `_ratio`), `_total` on counters only. The registry is this
 * module's own (never prom-client's global one), so several runs in one process, or tests, do not collide.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ConfigError } from '../../shared/errors.js';
import type { StepRecord } from '../../shared/wire/protocol.js';
import type { RunEvent, RunObserver, WorkerView } from '../events.js';
import type { RunPhase } from './views.js';
import { WaitTracker } from './waits.js';

export interface MetricsOptions {
  /**
   * Parameters of the model, to estimate the bytes each worker sends per ring allreduce
   * (2 * (n - 1) / n * 4 bytes * paramCount). Unknown by default: the bytes counter is exported but stays empty.
   */
  paramCount?: number;
  /** Include Node.js process metrics (CPU, memory, event loop, GC), prefixed `ringtrain_` (default true). */
  processMetrics?: boolean;
}

export interface RunMetrics {
  registry: Registry;
  observe: RunObserver;
}

const PREFIX = 'ringtrain_';
/** Step phases on CPU or wasm take from about a millisecond (apply) to seconds (a big convnet's compute). */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const RUN_STATES: readonly RunPhase[] = [
  'waiting',
  'starting',
  'training',
  'recovering',
  'finished',
  'failed',
  'interrupted',
];
const ENDED: ReadonlySet<RunPhase> = new Set(['finished', 'failed', 'interrupted']);
const PHASES = ['data', 'compute', 'allreduce', 'apply'] as const;

/** Bytes one worker sends in one ring allreduce of `paramCount` float32 values over `worldSize` workers. */
export function allreduceBytesPerWorker(paramCount: number, worldSize: number): number {
  if (worldSize < 2) return 0;
  return Math.round(((2 * (worldSize - 1)) / worldSize) * 4 * paramCount);
}

function createInstruments(registry: Registry) {
  const r = { registers: [registry] };
  return {
    runInfo: new Gauge({
      ...r,
      name: `${PREFIX}run_info`,
      help: 'The run being trained (always 1)',
      labelNames: ['run_id', 'model'] as const,
    }),
    runState: new Gauge({
      ...r,
      name: `${PREFIX}run_state`,
      help: 'Run state: 1 for the current state, 0 for the others',
      labelNames: ['state'] as const,
    }),
    generation: new Gauge({ ...r, name: `${PREFIX}generation`, help: 'Membership generation of the current ring' }),
    workersAlive: new Gauge({ ...r, name: `${PREFIX}workers_alive`, help: 'Workers connected to the coordinator' }),
    worldSize: new Gauge({ ...r, name: `${PREFIX}world_size`, help: 'Workers in the current ring' }),
    epoch: new Gauge({ ...r, name: `${PREFIX}epoch`, help: 'Epoch in progress, 1-based' }),
    epochsCompleted: new Counter({
      ...r,
      name: `${PREFIX}epochs_completed_total`,
      help: 'Epochs trained and evaluated',
    }),
    step: new Gauge({ ...r, name: `${PREFIX}step`, help: 'Latest global training step reported' }),
    steps: new Counter({ ...r, name: `${PREFIX}steps_total`, help: 'Global training steps completed' }),
    samples: new Counter({
      ...r,
      name: `${PREFIX}samples_total`,
      help: 'Training samples processed, summed over workers',
    }),
    trainLoss: new Gauge({
      ...r,
      name: `${PREFIX}train_loss`,
      help: 'Training loss of the latest step reported by each worker',
      labelNames: ['rank'] as const,
    }),
    epochTrainLoss: new Gauge({
      ...r,
      name: `${PREFIX}epoch_train_loss`,
      help: 'Mean training loss of the last completed epoch',
    }),
    testLoss: new Gauge({ ...r, name: `${PREFIX}test_loss`, help: 'Test loss after the last completed epoch' }),
    testAccuracy: new Gauge({
      ...r,
      name: `${PREFIX}test_accuracy_ratio`,
      help: 'Test accuracy (0-1) after the last completed epoch',
    }),
  };
}

/** Per-worker step timings and traffic. */
function createStepInstruments(registry: Registry) {
  const r = { registers: [registry] };
  return {
    stepDuration: new Histogram({
      ...r,
      name: `${PREFIX}step_duration_seconds`,
      help: 'Duration of one training step (data + compute + allreduce + apply) per worker',
      labelNames: ['rank'] as const,
      buckets: DURATION_BUCKETS,
    }),
    allreduceDuration: new Histogram({
      ...r,
      name: `${PREFIX}allreduce_duration_seconds`,
      help: 'Duration of one ring allreduce per worker, including waiting for the slowest peer',
      labelNames: ['rank'] as const,
      buckets: DURATION_BUCKETS,
    }),
    phaseSeconds: new Counter({
      ...r,
      name: `${PREFIX}step_phase_seconds_total`,
      help: 'Time spent in each step phase per worker',
      labelNames: ['rank', 'phase'] as const,
    }),
    allreduceBytes: new Counter({
      ...r,
      name: `${PREFIX}allreduce_bytes_total`,
      help: 'Gradient bytes sent by each worker in ring allreduces, as reported by the worker',
      labelNames: ['rank'] as const,
    }),
  };
}

/** Failures, recoveries and notices. */
function createFaultInstruments(registry: Registry) {
  const r = { registers: [registry] };
  return {
    failures: new Counter({
      ...r,
      name: `${PREFIX}worker_failures_total`,
      help: 'Workers that disconnected before the run ended',
    }),
    recoveries: new Counter({ ...r, name: `${PREFIX}recoveries_total`, help: 'Rings re-formed after losing a worker' }),
    notices: new Counter({
      ...r,
      name: `${PREFIX}notices_total`,
      help: 'Run notices (checkpoints, warnings, errors) by level',
      labelNames: ['level'] as const,
    }),
  };
}

/** Who made the others wait (waits.ts), per rank. */
function createWaitInstruments(registry: Registry) {
  const r = { registers: [registry] };
  return {
    lastToAllreduce: new Counter({
      ...r,
      name: `${PREFIX}allreduce_last_total`,
      help: 'Steps in which this rank entered the ring allreduce last (the others waited for it)',
      labelNames: ['rank'] as const,
    }),
    waitCaused: new Counter({
      ...r,
      name: `${PREFIX}wait_caused_seconds_total`,
      help: "Everyone's waiting in the allreduces this rank entered last, summed over the waiting ranks",
      labelNames: ['rank'] as const,
    }),
    waitHeld: new Counter({
      ...r,
      name: `${PREFIX}wait_held_seconds_total`,
      help: 'Time the ring waited for this rank alone (its lead over the second-to-last rank to enter)',
      labelNames: ['rank'] as const,
    }),
    waitShare: new Gauge({
      ...r,
      name: `${PREFIX}wait_share_ratio`,
      help: "This rank's share (0-1) of everyone's allreduce waiting in the run so far",
      labelNames: ['rank'] as const,
    }),
    heldRatio: new Gauge({
      ...r,
      name: `${PREFIX}wait_held_ratio`,
      help: "Fraction (0-1) of the steps' wall time the ring waited for this rank alone",
      labelNames: ['rank'] as const,
    }),
  };
}

type Instruments = ReturnType<typeof createInstruments> &
  ReturnType<typeof createStepInstruments> &
  ReturnType<typeof createFaultInstruments> &
  ReturnType<typeof createWaitInstruments>;

/** Folds run events into the instruments; the bookkeeping counters need (highest step, live workers, ring size). */
class MetricsObserver {
  private maxStep = -1;
  private readonly alive = new Set<string>();
  private worldSize = 0;
  private state: RunPhase = 'idle';
  private minWorkers = 1;
  private trained = false;
  /** A worker was lost since the last ring formed: the next ring is a recovery. */
  private lostSinceRing = false;
  private readonly waits = new WaitTracker({ recent: 1 });

  constructor(
    private readonly m: Instruments,
    private readonly paramCount: number | undefined,
  ) {
    for (const s of RUN_STATES) m.runState.set({ state: s }, 0);
    for (const level of ['info', 'warn', 'error']) m.notices.inc({ level }, 0);
  }

  private setState(state: RunPhase): void {
    this.state = state;
    for (const s of RUN_STATES) this.m.runState.set({ state: s }, s === state ? 1 : 0);
  }

  private setAlive(view: WorkerView, alive: boolean): void {
    if (alive) this.alive.add(view.id);
    else this.alive.delete(view.id);
    this.m.workersAlive.set(this.alive.size);
  }

  readonly observe: RunObserver = (event: RunEvent) => {
    const m = this.m;
    switch (event.kind) {
      case 'runStarted':
        m.runInfo.set({ run_id: event.runId, model: event.model }, 1);
        this.minWorkers = event.minWorkers;
        return this.setState('waiting');
      case 'workerJoined':
        return this.setAlive(event.worker, true);
      case 'workerLeft':
        return this.onWorkerLeft(event.worker);
      case 'ringFormed':
        if (this.lostSinceRing) m.recoveries.inc();
        this.lostSinceRing = false;
        this.worldSize = event.workers.length;
        this.waits.ring(event.gen, this.worldSize);
        m.generation.set(event.gen);
        m.worldSize.set(this.worldSize);
        if (!ENDED.has(this.state)) this.setState(this.trained ? 'recovering' : 'starting');
        return;
      case 'epochStarted':
        this.trained = true;
        m.epoch.set(event.epoch + 1);
        return this.setState('training');
      case 'steps':
        this.onSteps(event.rank, event.records);
        return this.onWaits(event.gen, event.rank, event.records);
      case 'epochFinished':
        m.epochsCompleted.inc();
        m.epochTrainLoss.set(event.outcome.trainLoss);
        m.testLoss.set(event.outcome.testLoss);
        return m.testAccuracy.set(event.outcome.testAccuracy);
      case 'notice':
        return m.notices.inc({ level: event.level });
      case 'runEnded':
        return this.setState(event.summary.outcome);
    }
  };

  private onWorkerLeft(view: WorkerView): void {
    this.setAlive(view, false);
    if (view.state !== 'lost') return;
    this.m.failures.inc();
    this.lostSinceRing = true;
    if (!ENDED.has(this.state) && this.state !== 'waiting' && this.alive.size < this.minWorkers)
      this.setState('waiting');
  }

  private onWaits(gen: number, rank: number, records: readonly StepRecord[]): void {
    let completed = false;
    for (const r of records) {
      const w = this.waits.add(gen, rank, r);
      if (!w) continue;
      completed = true;
      const labels = { rank: String(w.lastRank) };
      this.m.lastToAllreduce.inc(labels);
      this.m.waitCaused.inc(labels, w.waitMs / 1000);
      this.m.waitHeld.inc(labels, w.lateMs / 1000);
    }
    if (!completed) return;
    for (const w of this.waits.workers()) {
      const labels = { rank: String(w.rank) };
      // Zero-valued series for ranks never last, so every rank of the ring is listed.
      this.m.lastToAllreduce.inc(labels, 0);
      this.m.waitCaused.inc(labels, 0);
      this.m.waitHeld.inc(labels, 0);
      this.m.waitShare.set(labels, w.share);
      this.m.heldRatio.set(labels, w.heldFraction);
    }
  }

  private onSteps(rank: number, records: readonly StepRecord[]): void {
    const m = this.m;
    const labels = { rank: String(rank) };
    const bytesPerStep = this.paramCount === undefined ? 0 : allreduceBytesPerWorker(this.paramCount, this.worldSize);
    for (const r of records) {
      m.samples.inc(r.samples);
      m.stepDuration.observe(labels, (r.dataMs + r.computeMs + r.allreduceMs + r.applyMs) / 1000);
      m.allreduceDuration.observe(labels, r.allreduceMs / 1000);
      for (const phase of PHASES) m.phaseSeconds.inc({ ...labels, phase }, Math.max(0, r[`${phase}Ms`]) / 1000);
      // What the worker says it sent (fp16-aware); the estimate from the parameter count only for older workers.
      const sent = r.sentBytes ?? bytesPerStep;
      if (sent > 0) m.allreduceBytes.inc(labels, sent);
      if (r.step > this.maxStep) {
        m.steps.inc(r.step - this.maxStep);
        this.maxStep = r.step;
        m.step.set(r.step);
      }
      // A diverging loss is NaN or Infinity; Prometheus carries those, so report it as is.
      m.trainLoss.set(labels, r.loss);
    }
  }
}

/**
 * prom-client's default Node.js metrics, minus the few gauges it names `..._total` (active handles, requests,
 * resources), which `promtool check metrics` rejects: `_total` is for counters. Their per-type gauges stay.
 */
function addProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  for (const metric of registry.getMetricsAsArray()) {
    // The typings declare `type` a numeric enum; at run time it is the string 'counter', 'gauge', ...
    const { name, type } = metric as unknown as { name: string; type: string };
    if (name.endsWith('_total') && type !== 'counter') registry.removeSingleMetric(name);
  }
}

/** A registry with the run's metrics and the observer that keeps them current. */
export function createMetrics(opts: MetricsOptions = {}): RunMetrics {
  if (opts.paramCount !== undefined && (!Number.isInteger(opts.paramCount) || opts.paramCount < 0)) {
    throw new ConfigError(`paramCount must be a non-negative integer, got ${opts.paramCount}`);
  }
  const registry = new Registry();
  if (opts.processMetrics ?? true) addProcessMetrics(registry);
  const instruments = {
    ...createInstruments(registry),
    ...createStepInstruments(registry),
    ...createFaultInstruments(registry),
    ...createWaitInstruments(registry),
  };
  const observer = new MetricsObserver(instruments, opts.paramCount);
  return { registry, observe: observer.observe };
}
