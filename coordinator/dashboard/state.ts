/**
 * Everything the dashboard page and /api/status show, kept up to date by observing the coordinator's run events:
 * run and cluster state, per-worker health (moving-average step timings, samples/s, last seen, straggler flag),
 * bounded chart series (loss per step, test accuracy per epoch, cluster throughput), epoch progress with ETA, an
 * event log and the final summary. Free of I/O: the server turns `snapshot()` and `changesSince()` into JSON.
 *
 * Non-finite numbers (a diverging loss) stay NaN/Infinity here; JSON.stringify writes them as null.
 */
import type { StepRecord } from '../../shared/wire/protocol.js';
import type { RunEvent, RunObserver, RunSummaryView, WorkerState, WorkerView } from '../events.js';
import type { EpochOutcome } from '../run-state.js';
import { Series } from './series.js';
import type {
  DashboardCursor,
  DashboardSnapshot,
  DashboardStateOptions,
  DashboardUpdate,
  EpochProgressView,
  LogEntry,
  SeriesSet,
  StatusView,
  WorkerStatus,
} from './views.js';
import { WaitTracker } from './waits.js';

export { Series } from './series.js';
export type * from './views.js';

// ---------------------------------------------------------------------------------------------
// The state

interface WorkerEntry extends WorkerStatus {
  order: number;
  prev?: { step: number; epoch: number; startedAt: number; samples: number };
}

const SECRET_KEY = /token|secret|password|passwd|auth|cookie|credential/i;
const GONE: ReadonlySet<WorkerState> = new Set(['lost', 'stopped']);

function ema(prev: number | undefined, value: number, weight: number): number {
  return prev === undefined || !Number.isFinite(prev) ? value : prev + weight * (value - prev);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Notice fields are free-form: drop anything that looks like a credential, so the page can never show one. */
function redact(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!fields) return undefined;
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !SECRET_KEY.test(k)));
}

function pct(v: number): string {
  return `${(100 * v).toFixed(2)}%`;
}

export class DashboardState {
  private readonly opts: Required<Omit<DashboardStateOptions, 'now'>>;
  private readonly clock: () => number;
  private readonly listeners = new Set<() => void>();
  // Per-run state, (re)initialised by resetRun(); the event log and the listeners outlive runs.
  private run!: StatusView['run'];
  private generation!: number;
  private worldSize!: number;
  private step!: number;
  private workers!: Map<string, WorkerEntry>;
  private rankToId!: Map<number, string>;
  private joinCounter!: number;
  private progress!: {
    epoch: number;
    epochs: number;
    samplesDone: number;
    samplesTotal: number;
    startedAt: number;
    lastAt: number;
  };
  private latest!: {
    loss: number;
    trainLoss: number;
    testAccuracy: number;
    testLoss: number;
    samples: number;
    failures: number;
    recoveries: number;
  };
  private history!: EpochOutcome[];
  private summary!: RunSummaryView | null;
  private series!: SeriesSet<Series>;
  /** Loss sums of steps not every rank reported yet. */
  private pendingLoss!: Map<number, { sum: number; count: number }>;
  private lastLossStep!: number;
  private lastThroughputAt!: number;
  /** A worker was lost since the last ring formed: the next ring is a recovery. */
  private lostSinceRing!: boolean;
  private waits!: WaitTracker;
  private events: LogEntry[] = [];
  private eventSeq = 0;

  constructor(options: DashboardStateOptions = {}) {
    this.opts = {
      seriesCap: options.seriesCap ?? 5000,
      eventLogSize: options.eventLogSize ?? 500,
      stragglerRatio: options.stragglerRatio ?? 1.5,
      smoothing: options.smoothing ?? 0.2,
      throughputIntervalMs: options.throughputIntervalMs ?? 1000,
      departedKept: options.departedKept ?? 32,
    };
    this.clock = options.now ?? Date.now;
    this.resetRun();
  }

  /** Start from scratch: at construction, and when a second run is observed (a restarted coordinator in one process). */
  private resetRun(): void {
    const cap = this.opts.seriesCap;
    this.run = {
      id: null,
      model: null,
      epochs: 0,
      minWorkers: 0,
      batchSize: 0,
      phase: 'idle',
      startedAt: null,
      endedAt: null,
    };
    this.generation = 0;
    this.worldSize = 0;
    this.step = -1;
    this.workers = new Map();
    this.rankToId = new Map();
    this.joinCounter = 0;
    this.progress = { epoch: -1, epochs: 0, samplesDone: 0, samplesTotal: 0, startedAt: 0, lastAt: 0 };
    this.latest = {
      loss: NaN,
      trainLoss: NaN,
      testAccuracy: NaN,
      testLoss: NaN,
      samples: 0,
      failures: 0,
      recoveries: 0,
    };
    this.history = [];
    this.summary = null;
    this.series = { loss: new Series(cap), accuracy: new Series(cap), throughput: new Series(cap) };
    this.pendingLoss = new Map();
    this.lastLossStep = -1;
    this.lastThroughputAt = -Infinity;
    this.lostSinceRing = false;
    this.waits = new WaitTracker();
  }

  /** Call `listener` after every event that changed the state; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** The observer to hand to startCoordinator (a bound arrow, so it can be passed on its own). */
  readonly observe: RunObserver = (event, at) => {
    this.apply(event, at);
    for (const l of this.listeners) l();
  };

  private apply(event: RunEvent, at: number): void {
    switch (event.kind) {
      case 'runStarted':
        return this.onRunStarted(event, at);
      case 'workerJoined':
        return this.onWorkerJoined(event.worker, at);
      case 'workerLeft':
        return this.onWorkerLeft(event.worker, event.reason, at);
      case 'ringFormed':
        return this.onRingFormed(event.gen, event.workers, at);
      case 'epochStarted':
        return this.onEpochStarted(event, at);
      case 'steps':
        return this.onSteps(event.gen, event.rank, event.records, at);
      case 'epochFinished':
        return this.onEpochFinished(event.outcome, at);
      case 'notice':
        return this.log(at, event.level, 'notice', event.message, redact(event.fields));
      case 'runEnded':
        return this.onRunEnded(event.summary, at);
    }
  }

  private log(
    at: number,
    level: LogEntry['level'],
    kind: LogEntry['kind'],
    message: string,
    fields?: Record<string, unknown>,
  ): void {
    this.events.push({
      seq: ++this.eventSeq,
      at,
      level,
      kind,
      message,
      ...(fields && Object.keys(fields).length > 0 ? { fields } : {}),
    });
    if (this.events.length > this.opts.eventLogSize) this.events = this.events.slice(-this.opts.eventLogSize);
  }

  private onRunStarted(e: Extract<RunEvent, { kind: 'runStarted' }>, at: number): void {
    if (this.run.id !== null) this.resetRun();
    this.run = {
      id: e.runId,
      model: e.model,
      epochs: e.epochs,
      minWorkers: e.minWorkers,
      batchSize: e.batchSize,
      phase: 'waiting',
      startedAt: at,
      endedAt: null,
    };
    this.progress.epochs = e.epochs;
    this.log(
      at,
      'info',
      e.kind,
      `run started: ${e.model}, ${e.epochs} epoch(s), batch ${e.batchSize}; waiting for ${e.minWorkers} worker(s)`,
    );
  }

  private upsertWorker(view: WorkerView, at: number): WorkerEntry {
    let w = this.workers.get(view.id);
    if (!w) {
      w = {
        id: view.id,
        rank: view.rank,
        host: view.host,
        backend: view.backend,
        state: view.state,
        samplesPerSec: 0,
        timingsMs: null,
        steps: 0,
        lastStep: -1,
        lastLoss: null,
        lastSeen: at,
        straggler: false,
        order: this.joinCounter++,
      };
      this.workers.set(view.id, w);
    }
    Object.assign(w, { rank: view.rank, host: view.host, backend: view.backend, state: view.state, lastSeen: at });
    return w;
  }

  private onWorkerJoined(view: WorkerView, at: number): void {
    this.upsertWorker(view, at);
    this.log(at, 'info', 'workerJoined', `worker joined from ${view.host} (${view.backend})`, { worker: view.id });
  }

  private onWorkerLeft(view: WorkerView, reason: string, at: number): void {
    const w = this.upsertWorker(view, at);
    const who = w.rank >= 0 ? `rank ${w.rank} (${w.host})` : `worker from ${w.host}`;
    if (view.state === 'lost') {
      this.latest.failures++;
      this.lostSinceRing = true;
      this.log(at, 'error', 'workerLeft', `${who} lost: ${reason}`, { worker: view.id });
      const alive = [...this.workers.values()].filter((x) => !GONE.has(x.state)).length;
      if (this.isRunning() && alive < this.run.minWorkers) this.run.phase = 'waiting';
    } else {
      this.log(at, 'info', 'workerLeft', `${who} left: ${reason}`, { worker: view.id });
    }
    this.flushLoss(Infinity);
    this.trimDeparted();
  }

  private trimDeparted(): void {
    const gone = [...this.workers.values()].filter((w) => GONE.has(w.state)).sort((a, b) => a.lastSeen - b.lastSeen);
    for (const w of gone.slice(0, Math.max(0, gone.length - this.opts.departedKept))) this.workers.delete(w.id);
  }

  private isRunning(): boolean {
    return ['starting', 'training', 'evaluating', 'recovering'].includes(this.run.phase);
  }

  private onRingFormed(gen: number, views: WorkerView[], at: number): void {
    this.flushLoss(Infinity);
    const first = this.generation === 0;
    this.generation = gen;
    this.worldSize = views.length;
    this.rankToId = new Map(views.map((v) => [v.rank, v.id]));
    this.waits.ring(gen, views.length);
    for (const v of views) this.upsertWorker(v, at);
    if (this.run.endedAt === null) this.run.phase = this.progress.epoch < 0 ? 'starting' : 'recovering';
    const ring = `ring of ${views.length} worker(s), generation ${gen}`;
    if (this.lostSinceRing) {
      this.latest.recoveries++;
      this.lostSinceRing = false;
      this.log(at, 'warn', 'ringFormed', `recovered: ${ring}`);
    } else {
      this.log(at, 'info', 'ringFormed', first ? `ring formed: ${ring}` : `ring re-formed: ${ring}`);
    }
  }

  private onEpochStarted(e: Extract<RunEvent, { kind: 'epochStarted' }>, at: number): void {
    const p = this.progress;
    this.run.phase = 'training';
    // After a membership change the coordinator re-plans the epoch in progress; `samples` is what is left of it.
    if (e.epoch === p.epoch && e.samples <= p.samplesTotal) {
      p.samplesDone = p.samplesTotal - e.samples;
      p.lastAt = at;
      this.log(at, 'info', 'epochStarted', `epoch ${e.epoch + 1}/${e.epochs} continues: ${e.samples} samples left`);
      return;
    }
    this.progress = {
      epoch: e.epoch,
      epochs: e.epochs,
      samplesDone: 0,
      samplesTotal: e.samples,
      startedAt: at,
      lastAt: at,
    };
    this.log(at, 'info', 'epochStarted', `epoch ${e.epoch + 1}/${e.epochs} started: ${e.samples} samples`);
  }

  private workerForRank(rank: number, at: number): WorkerEntry {
    const id = this.rankToId.get(rank);
    const known = id === undefined ? undefined : this.workers.get(id);
    if (known) return known;
    // Steps from a rank no ring event announced (an observer attached late): show it rather than drop it.
    const view: WorkerView = { id: id ?? `rank-${rank}`, rank, host: 'unknown', backend: 'unknown', state: 'training' };
    this.rankToId.set(rank, view.id);
    return this.upsertWorker(view, at);
  }

  private onSteps(gen: number, rank: number, records: StepRecord[], at: number): void {
    const w = this.workerForRank(rank, at);
    w.lastSeen = at;
    if (!GONE.has(w.state)) w.state = 'training';
    for (const r of records) {
      this.foldWorkerRecord(w, r);
      this.latest.samples += r.samples;
      if (r.epoch === this.progress.epoch) this.progress.samplesDone += r.samples;
      this.step = Math.max(this.step, r.step);
      this.addLoss(r.step, r.loss);
      this.waits.add(gen, rank, r);
    }
    this.progress.lastAt = at;
    if (
      this.run.phase === 'training' &&
      this.progress.samplesTotal > 0 &&
      this.progress.samplesDone >= this.progress.samplesTotal
    ) {
      this.run.phase = 'evaluating';
    }
    this.maybeAddThroughput(at);
  }

  /** Update a worker's moving averages; its samples/s comes from the wall time between consecutive step starts. */
  private foldWorkerRecord(w: WorkerEntry, r: StepRecord): void {
    const a = this.opts.smoothing;
    const t = w.timingsMs;
    const stepMs = r.dataMs + r.computeMs + r.allreduceMs + r.applyMs;
    w.timingsMs = {
      data: ema(t?.data, r.dataMs, a),
      compute: ema(t?.compute, r.computeMs, a),
      allreduce: ema(t?.allreduce, r.allreduceMs, a),
      reduceScatter: ema(t?.reduceScatter, r.reduceScatterMs, a),
      allgather: ema(t?.allgather, Math.max(0, r.allreduceMs - r.reduceScatterMs), a),
      apply: ema(t?.apply, r.applyMs, a),
      step: ema(t?.step, stepMs, a),
    };
    const p = w.prev;
    const consecutive = p && p.epoch === r.epoch && r.step === p.step + 1 && r.startedAt > p.startedAt;
    if (consecutive) {
      w.samplesPerSec = ema(
        w.steps > 1 ? w.samplesPerSec : undefined,
        (p.samples * 1000) / (r.startedAt - p.startedAt),
        a,
      );
    } else if (w.samplesPerSec === 0 && stepMs > 0) {
      w.samplesPerSec = (r.samples * 1000) / stepMs;
    }
    w.prev = { step: r.step, epoch: r.epoch, startedAt: r.startedAt, samples: r.samples };
    w.steps++;
    w.lastStep = Math.max(w.lastStep, r.step);
    w.lastLoss = r.loss;
  }

  /** The loss of a global step is the mean over the ranks; a step is plotted once every rank reported it. */
  private addLoss(step: number, loss: number): void {
    if (step <= this.lastLossStep) return; // a step re-run after a recovery is already on the chart
    const p = this.pendingLoss.get(step) ?? { sum: 0, count: 0 };
    p.sum += loss;
    p.count++;
    this.pendingLoss.set(step, p);
    if (p.count >= Math.max(1, this.worldSize)) this.flushLoss(step);
  }

  /** Plot every pending step up to `upTo`, in step order (incomplete ones with the ranks that did report). */
  private flushLoss(upTo: number): void {
    const steps = [...this.pendingLoss.keys()].filter((s) => s <= upTo).sort((a, b) => a - b);
    for (const s of steps) {
      const p = this.pendingLoss.get(s)!;
      this.pendingLoss.delete(s);
      if (s <= this.lastLossStep) continue;
      this.series.loss.push(s, p.sum / p.count);
      this.latest.loss = p.sum / p.count;
      this.lastLossStep = s;
    }
  }

  private clusterSamplesPerSec(): number {
    let sum = 0;
    for (const w of this.workers.values()) if (w.state === 'training') sum += w.samplesPerSec;
    return sum;
  }

  private maybeAddThroughput(at: number): void {
    if (at - this.lastThroughputAt < this.opts.throughputIntervalMs) return;
    this.lastThroughputAt = at;
    this.series.throughput.push(at / 1000, this.clusterSamplesPerSec());
  }

  private onEpochFinished(o: EpochOutcome, at: number): void {
    this.history.push(o);
    this.series.accuracy.push(o.epoch, o.testAccuracy);
    Object.assign(this.latest, { trainLoss: o.trainLoss, testAccuracy: o.testAccuracy, testLoss: o.testLoss });
    this.progress.samplesDone = this.progress.samplesTotal;
    const rate = o.samples / Math.max(1e-9, o.trainSeconds);
    this.log(
      at,
      'info',
      'epochFinished',
      `epoch ${o.epoch}: train loss ${o.trainLoss.toFixed(4)}, test accuracy ${pct(o.testAccuracy)}, ${rate.toFixed(0)} samples/s`,
    );
  }

  private onRunEnded(summary: RunSummaryView, at: number): void {
    this.flushLoss(Infinity);
    this.summary = summary;
    this.run.phase = summary.outcome;
    this.run.endedAt = at;
    const level = summary.outcome === 'finished' ? 'info' : summary.outcome === 'interrupted' ? 'warn' : 'error';
    const what =
      summary.outcome === 'finished'
        ? `run finished: ${summary.epochs} epoch(s), ${summary.steps} steps, test accuracy ${pct(summary.testAccuracy)}, ${summary.wallSeconds.toFixed(1)} s`
        : `run ${summary.outcome}: ${summary.error ?? 'no reason given'}`;
    this.log(at, level, 'runEnded', what);
  }

  // -------------------------------------------------------------------------------------------
  // Views

  private workerViews(): WorkerStatus[] {
    const entries = [...this.workers.values()];
    const stragglers = this.stragglers(entries);
    const byRank = (a: WorkerEntry, b: WorkerEntry): number =>
      Number(GONE.has(a.state)) - Number(GONE.has(b.state)) ||
      (a.rank < 0 ? 1e9 : a.rank) - (b.rank < 0 ? 1e9 : b.rank) ||
      a.order - b.order;
    return entries.sort(byRank).map(({ order: _order, prev: _prev, ...w }) => ({
      ...w,
      timingsMs: w.timingsMs ? { ...w.timingsMs } : null,
      straggler: stragglers.has(w.id),
    }));
  }

  /** Training workers whose compute time is well above the median of at least two. */
  private stragglers(entries: WorkerEntry[]): Set<string> {
    const active = entries.filter((w) => w.state === 'training' && w.timingsMs);
    if (active.length < 2) return new Set();
    const med = median(active.map((w) => w.timingsMs!.compute));
    return new Set(
      active.filter((w) => med > 0 && w.timingsMs!.compute > this.opts.stragglerRatio * med).map((w) => w.id),
    );
  }

  private progressView(now: number): EpochProgressView {
    const p = this.progress;
    const fraction = p.samplesTotal > 0 ? Math.min(1, p.samplesDone / p.samplesTotal) : 0;
    const elapsed = (p.lastAt - p.startedAt) / 1000;
    const rate = elapsed > 0 ? p.samplesDone / elapsed : 0;
    const live = this.run.phase === 'training' || this.run.phase === 'evaluating';
    let eta: number | null = null;
    let runEta: number | null = null;
    if (live && rate > 0) {
      eta = Math.max(0, (p.samplesTotal - p.samplesDone) / rate - Math.max(0, now - p.lastAt) / 1000);
      runEta = eta + (Math.max(0, p.epochs - p.epoch - 1) * p.samplesTotal) / rate;
    } else if (this.run.endedAt !== null) {
      eta = 0;
      runEta = 0;
    }
    return {
      epoch: p.epoch + 1,
      epochs: p.epochs,
      samplesDone: p.samplesDone,
      samplesTotal: p.samplesTotal,
      fraction,
      etaSeconds: eta,
      runEtaSeconds: runEta,
    };
  }

  /** The small, always-complete part of every view. */
  status(): StatusView {
    const now = this.clock();
    const workers = this.workerViews();
    const l = this.latest;
    const nullIfNaN = (v: number): number | null => (Number.isNaN(v) ? null : v);
    return {
      now,
      run: { ...this.run },
      generation: this.generation,
      epoch: this.progress.epoch + 1,
      step: this.step,
      worldSize: this.worldSize,
      progress: this.progressView(now),
      workers,
      latest: {
        loss: nullIfNaN(l.loss),
        trainLoss: nullIfNaN(l.trainLoss),
        testAccuracy: nullIfNaN(l.testAccuracy),
        testLoss: nullIfNaN(l.testLoss),
        samplesPerSec: this.summary ? this.summary.samplesPerSec : this.clusterSamplesPerSec(),
        samples: l.samples,
        workersAlive: workers.filter((w) => !GONE.has(w.state)).length,
        failures: l.failures,
        recoveries: l.recoveries,
      },
      history: this.history.map((h) => ({ ...h })),
      waits: this.waits.view(),
      summary: this.summary ? { ...this.summary } : null,
    };
  }

  /** The whole state: the JSON of /api/status and of the page's first message. */
  snapshot(): DashboardSnapshot {
    const s = this.series;
    return {
      ...this.status(),
      series: { loss: s.loss.all(), accuracy: s.accuracy.all(), throughput: s.throughput.all() },
      events: [...this.events],
    };
  }

  cursor(): DashboardCursor {
    const s = this.series;
    return {
      series: { loss: s.loss.cursor(), accuracy: s.accuracy.cursor(), throughput: s.throughput.cursor() },
      eventSeq: this.eventSeq,
    };
  }

  /** The status, the series points and log entries added after `cursor`, and the cursor to use next time. */
  changesSince(cursor: DashboardCursor): DashboardUpdate {
    const s = this.series;
    const c = cursor.series;
    return {
      ...this.status(),
      series: {
        loss: s.loss.since(c.loss),
        accuracy: s.accuracy.since(c.accuracy),
        throughput: s.throughput.since(c.throughput),
      },
      events: this.events.filter((e) => e.seq > cursor.eventSeq),
      cursor: this.cursor(),
    };
  }
}
