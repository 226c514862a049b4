/**
 * The coordinator: the control plane of a run. It admits workers (challenge-response on the cluster token), assigns
 * ranks and ring neighbours under a membership generation, restores every replica from one state (rank 0's initial
 * weights, the most advanced survivor after a membership change, or a checkpoint on --resume), plans each
 * generation's share of the epoch, collects metrics and the sharded evaluation, writes checkpoints, and stops the
 * cluster at the end. Gradients never pass through it.
 *
 * Run phases: rendezvous -> forming (ring links) -> syncing (replica state) -> training -> finished | failed, and
 * back to forming on every membership change (to waiting while fewer than --min-workers remain).
 */
import fs from 'node:fs';
import path from 'node:path';
import { RingHealth } from './ring-health.js';
import { randomUUID } from 'node:crypto';
import type { WebSocket } from 'ws';
import type { Compression } from '../shared/ring/allreduce.js';
import type { TrainConfig } from '../shared/config.js';
import type { Dataset } from '../shared/data/dataset.js';
import { CLOSE_CODES, ProtocolError, RendezvousTimeoutError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { ProgressView } from '../shared/cli/progress.js';
import type { CoordinatorModel } from '../shared/train/run-model.js';
import {
  bytesToFloat32,
  decodeFrame,
  float32ToBytes,
  PROTOCOL_VERSION,
  type Message,
  type DatasetInfo,
  type MessageOf,
} from '../shared/wire/protocol.js';
import { rawToBytes, sendMessage } from '../shared/ws-util.js';
import type { CheckpointStore } from './checkpoints.js';
import { datasetRefusal, planShard } from './data-plan.js';
import { exitCodeOfOutcome } from '../shared/exit-codes.js';
import { planFrom, positionAt, type EpochPlan, type Position } from './epoch-plan.js';
import { RunEvents, type RunEvent, type RunObserver, type RunSummaryView, type WorkerView } from './events.js';
import { FinalModelFetch } from './final-model.js';
import { RunState, type EpochOutcome, type PhaseMeans, type WaitSummary } from './run-state.js';

export interface CoordinatorOptions {
  minWorkers: number;
  /** 0 = no limit. */
  maxWorkers: number;
  rendezvousTimeoutMs: number;
  checkEvery: number;
  reportEvery: number;
  heartbeatMs: number;
  heartbeatMisses: number;
  /** Evict the worker a stalled step waits on after this long (0 = never; heartbeats still apply). */
  stallAbortMs: number;
  /** Fail the run when a new ring's links are not all up within this time. */
  ringFormTimeoutMs: number;
  /** Checkpoint every this many steps (0 = only at the end of every epoch). */
  checkpointEvery: number;
  nonFinite: 'skip' | 'abort';
  /** Gradient wire encoding the workers use (`--compression`); default 'none'. */
  compression?: Compression;
}

export interface ResumeState {
  runId: string;
  position: Position;
  weights: Float32Array;
  optimizer: Float32Array;
  history: EpochOutcome[];
  totalSamples: number;
}

/** What --summary-json holds: the fields observers see at the end of a run, and the cluster's details. */
export interface ClusterSummary extends RunSummaryView, WaitSummary {
  model: string;
  backend: string;
  generations: number;
  phaseMeanMs: PhaseMeans;
  hashChecks: number;
  hashMismatches: number;
  nonFiniteSteps: number;
  history: EpochOutcome[];
}

type RunPhase = 'rendezvous' | 'forming' | 'syncing' | 'training' | 'waiting' | 'finished' | 'failed';
interface WorkerRecord {
  id: string;
  ws: WebSocket;
  host: string;
  ringHost: string;
  ringPort: number;
  hasData: boolean;
  backend: string;
  rank: number;
  ready: boolean;
  readyStep: number;
  hasState: boolean;
  lastSeen: number;
  log: Logger;
}

export interface CoordinatorDeps {
  train: TrainConfig;
  opts: CoordinatorOptions;
  data: Dataset;
  /** The full dataset's description (before --train-limit / --test-limit), which local copies must match. */
  dataInfo: DatasetInfo;
  runDir: string;
  summaryJson?: string;
  checkpoints: CheckpointStore;
  resume?: ResumeState;
  log: Logger;
  progress: ProgressView;
  observers: RunObserver[];
  /** The model the workers build (its topology), the weights it brought, and where the trained one is saved. */
  model?: CoordinatorModel;
}

export class Coordinator {
  readonly runId: string;
  private phase: RunPhase = 'rendezvous';
  private gen = 0;
  private readonly workers = new Map<WebSocket, WorkerRecord>();
  private members: WorkerRecord[] = [];
  private readonly state = new RunState(1);
  private position: Position = { epoch: 0, consumed: 0, step: 0 };
  private plan?: EpochPlan;
  private pendingWeights?: { purpose: 'sync' | 'checkpoint'; gen: number };
  private nextCheckpointStep = 0;
  private resume?: ResumeState;
  private readonly started = performance.now();
  private timers: NodeJS.Timeout[] = [];
  private readonly metricsFile: fs.WriteStream;
  private resolveDone!: (s: ClusterSummary) => void;
  readonly done = new Promise<ClusterSummary>((resolve) => {
    this.resolveDone = resolve;
  });
  private summary?: ClusterSummary;
  private readonly log: Logger;
  private readonly events = new RunEvents();
  private readonly stallReports = new Map<number, Set<number>>();
  private formingTimer?: NodeJS.Timeout;
  private readonly ringHealth = new RingHealth({
    members: () => this.members,
    gen: () => (this.phase === 'training' ? this.gen : -1),
    evict: (w, reason) => this.evict(w, reason),
    reform: (reason) => this.reform(reason),
    heartbeatMs: () => this.d.opts.heartbeatMs,
  });
  private finalModel?: FinalModelFetch;

  constructor(private readonly d: CoordinatorDeps) {
    this.log = d.log;
    this.runId = d.resume?.runId ?? randomUUID();
    for (const o of d.observers) this.events.add(o);
    fs.mkdirSync(d.runDir, { recursive: true });
    this.metricsFile = fs.createWriteStream(path.join(d.runDir, 'metrics.jsonl'), { flags: 'a' });
    if (d.resume) {
      this.resume = d.resume;
      this.position = d.resume.position;
      this.state.restoreHistory(d.resume.history, d.resume.totalSamples);
    }
    this.nextCheckpointStep = this.position.step + d.opts.checkpointEvery;
  }

  begin(): void {
    const t = this.d.train;
    this.timers.push(setTimeout(() => this.onRendezvousTimeout(), this.d.opts.rendezvousTimeoutMs));
    this.timers.push(setInterval(() => this.checkHeartbeats(), this.d.opts.heartbeatMs));
    for (const timer of this.timers) timer.unref();
    this.emit({
      kind: 'runStarted',
      runId: this.runId,
      model: t.model,
      epochs: t.epochs,
      minWorkers: this.d.opts.minWorkers,
      batchSize: t.batchSize,
    });
    if (this.resume) this.notice('info', 'resumed from checkpoint', { ...this.resume.position });
  }

  private emit(event: RunEvent): void {
    this.events.emit(event, (err) => this.log.warn({ err, kind: event.kind }, 'run observer failed'));
  }

  private notice(level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void {
    this.emit({ kind: 'notice', level, message, ...(fields ? { fields } : {}) });
  }

  private view(w: WorkerRecord, state: WorkerView['state']): WorkerView {
    return { id: w.id, rank: w.rank, host: w.host, backend: w.backend, state };
  }

  /** An authenticated link: its hello was verified by the admission step. */
  admit(ws: WebSocket, hello: MessageOf<'hello'>): void {
    ws.on('message', (data) => this.onRaw(ws, rawToBytes(data)));
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString()));
    ws.on('error', (err) => this.log.debug({ err }, 'worker link error'));
    try {
      this.onHello(ws, hello);
    } catch (err) {
      this.log.error({ err }, 'failed to admit a worker');
      ws.close(CLOSE_CODES.internal, 'internal error');
    }
  }

  private onRaw(ws: WebSocket, bytes: Uint8Array): void {
    const worker = this.workers.get(ws);
    let message: Message;
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'control') throw new ProtocolError('gradient chunks never go to the coordinator');
      message = frame.message;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, worker: worker?.id }, 'bad message from a worker; closing its link');
      ws.close(CLOSE_CODES.protocolError, 'bad message');
      return;
    }
    if (!worker) return;
    worker.lastSeen = Date.now();
    try {
      this.dispatch(worker, message);
    } catch (err) {
      this.log.warn(
        { err: (err as Error).message, type: message.type, rank: worker.rank },
        'rejected a worker message; closing its link',
      );
      ws.close(CLOSE_CODES.protocolError, 'unexpected message');
    }
  }

  private dispatch(worker: WorkerRecord, m: Message): void {
    if (m.type === 'heartbeat') return;
    if (!('gen' in m) || !('rank' in m)) throw new ProtocolError(`'${m.type}' is not expected from a worker now`);
    if (m.gen !== this.gen || m.rank !== worker.rank) {
      worker.log.debug({ gen: m.gen, current: this.gen, type: m.type }, 'dropping a message of another generation');
      return;
    }
    switch (m.type) {
      case 'ready':
        return this.onReady(worker, m);
      case 'weights':
        return this.onWeights(worker, m);
      case 'metrics':
        return this.onMetrics(worker, m);
      case 'evalResult':
        this.state.addEval(m);
        return this.maybeFinishEpoch(m.epoch);
      case 'epochDone':
        this.state.addEpochDone(m);
        return this.maybeFinishEpoch(m.epoch);
      case 'stall':
        return this.onStall(worker, m);
      case 'ringLinkDown':
        return this.ringHealth.onLinkDown(worker, m);
      case 'failed':
        return this.onFailed(worker, m);
      default:
        throw new ProtocolError(`'${m.type}' is not a worker message`);
    }
  }

  private onHello(ws: WebSocket, msg: MessageOf<'hello'>): void {
    if (this.summary) return void ws.close(CLOSE_CODES.goingAway, 'run ended');
    if (this.ringHealth.turnedAway(ws, msg)) return;
    const max = this.d.opts.maxWorkers;
    if (max > 0 && this.workers.size >= max) {
      this.log.warn({ host: msg.host, max }, 'worker turned away: cluster full');
      return void ws.close(CLOSE_CODES.goingAway, 'cluster full');
    }
    const refusal = datasetRefusal(msg, this.d.dataInfo, this.log);
    if (refusal) return void ws.close(CLOSE_CODES.policyViolation, refusal);
    // Backends round the optimizer's update differently, so a mixed ring would drift apart silently.
    const ringBackend = [...this.workers.values()][0]?.backend;
    if (ringBackend !== undefined && msg.backend !== ringBackend) {
      this.log.warn({ host: msg.host, backend: msg.backend, ringBackend }, 'worker turned away: backend differs');
      const why = `backend ${msg.backend} differs from the ring's ${ringBackend}: start every worker with one --backend`;
      return void ws.close(CLOSE_CODES.policyViolation, why);
    }
    const log = this.log.child({ workerId: msg.workerId, host: msg.host });
    const worker: WorkerRecord = {
      id: msg.workerId,
      ws,
      host: msg.host,
      ringHost: msg.ringHost,
      ringPort: msg.ringPort,
      hasData: msg.hasData,
      backend: msg.backend,
      rank: -1,
      ready: false,
      readyStep: 0,
      hasState: false,
      lastSeen: Date.now(),
      log,
    };
    this.workers.set(ws, worker);
    sendMessage(ws, { type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: msg.workerId, runId: this.runId });
    log.info(
      { workers: this.workers.size, minWorkers: this.d.opts.minWorkers, backend: msg.backend, hasData: msg.hasData },
      'worker joined',
    );
    this.d.progress.line(`worker joined from ${msg.host} (${msg.backend}); ${this.workers.size} connected`);
    this.emit({ kind: 'workerJoined', worker: this.view(worker, 'joined') });
    if (this.phase === 'rendezvous' || this.phase === 'waiting') {
      if (this.workers.size >= this.d.opts.minWorkers) this.reform('enough workers joined');
    } else {
      this.reform('a worker joined');
    }
  }

  /** New membership: every connected worker, old ranks first, under a new generation. */
  private reform(reason: string): void {
    if (this.summary || this.finalModel) return;
    const before = this.members.map((m) => m.rank);
    this.gen++;
    this.pendingWeights = undefined;
    this.stallReports.clear();
    const all = [...this.workers.values()];
    this.members = [
      ...all.filter((w) => before.includes(w.rank)).sort((a, b) => a.rank - b.rank),
      ...all.filter((w) => !before.includes(w.rank)),
    ];
    if (this.members.length < this.d.opts.minWorkers) {
      this.phase = 'waiting';
      this.log.warn(
        { gen: this.gen, workers: this.members.length, minWorkers: this.d.opts.minWorkers, reason },
        'too few workers; waiting',
      );
      this.notice('warn', `paused: ${this.members.length} of ${this.d.opts.minWorkers} workers (${reason})`);
      return;
    }
    this.phase = 'forming';
    this.armFormingTimer();
    const n = this.members.length;
    this.state.newGeneration(n, this.position.step);
    const config = {
      ...this.d.train,
      checkEvery: this.d.opts.checkEvery,
      reportEvery: this.d.opts.reportEvery,
      nonFinite: this.d.opts.nonFinite,
      compression: this.d.opts.compression ?? 'none',
    };
    this.members.forEach((w, rank) => {
      w.rank = rank;
      w.ready = false;
      w.log = this.log.child({ workerId: w.id, host: w.host, rank });
      const next = this.members[(rank + 1) % n]!;
      sendMessage(w.ws, {
        type: 'assign',
        gen: this.gen,
        rank,
        worldSize: n,
        predecessorRank: (rank - 1 + n) % n,
        successor: { host: next.ringHost, port: next.ringPort, rank: (rank + 1) % n },
        config,
        ...(this.d.model ? { modelTopology: this.d.model.topology } : {}),
      });
    });
    this.log.info({ gen: this.gen, worldSize: n, reason }, 'ring formed');
    if (this.gen > 1) this.notice('info', `ring re-formed with ${n} workers (${reason})`, { gen: this.gen });
    this.emit({ kind: 'ringFormed', gen: this.gen, workers: this.members.map((w) => this.view(w, 'joined')) });
  }

  /** Ring links that never come up (a wrong --advertise address, a closed port) fail the run with a clear message. */
  private armFormingTimer(): void {
    clearTimeout(this.formingTimer);
    const gen = this.gen;
    this.formingTimer = setTimeout(() => {
      if (this.gen !== gen || this.phase !== 'forming') return;
      const missing = this.members.filter((w) => !w.ready).map((w) => `rank ${w.rank} (${w.ringHost}:${w.ringPort})`);
      this.finish(
        'failed',
        `ring links did not come up within ${this.d.opts.ringFormTimeoutMs} ms; not ready: ${missing.join(', ')}; ` +
          "check that each worker's --advertise address and ring port are reachable from the others",
      );
    }, this.d.opts.ringFormTimeoutMs);
    this.formingTimer.unref();
  }

  private onReady(worker: WorkerRecord, m: MessageOf<'ready'>): void {
    worker.ready = true;
    worker.readyStep = m.step;
    worker.hasState = m.hasState;
    if (this.phase !== 'forming' || !this.members.every((w) => w.ready)) return;
    this.phase = 'syncing';
    clearTimeout(this.formingTimer);
    if (this.resume) return this.syncFromCheckpoint(this.resume);
    const withState = this.members.filter((w) => w.hasState);
    const initial = this.d.model?.initial; // a model.json's own weights start a fresh run
    if (withState.length === 0 && initial) return this.syncFromCheckpoint({ ...initial, position: this.position });
    // Fresh run: rank 0's initial weights. Otherwise the most advanced survivor: it holds every completed step.
    const source =
      withState.length === 0 ? this.members[0]! : withState.reduce((a, b) => (b.readyStep > a.readyStep ? b : a));
    this.pendingWeights = { purpose: 'sync', gen: this.gen };
    sendMessage(source.ws, { type: 'requestWeights', gen: this.gen });
    worker.log.debug({ source: source.rank, step: source.readyStep }, 'replica state requested');
  }

  private syncFromCheckpoint(r: Pick<ResumeState, 'weights' | 'optimizer' | 'position'>): void {
    this.resume = undefined;
    this.broadcastState(float32ToBytes(r.weights), float32ToBytes(r.optimizer), r.position);
  }

  private onWeights(worker: WorkerRecord, m: MessageOf<'weights'>): void {
    if (this.finalModel?.offer(m, this.position.step)) return;
    const pending = this.pendingWeights;
    if (!pending || pending.gen !== this.gen) return;
    this.pendingWeights = undefined;
    const pos = this.plan ? positionAt(this.plan, m.step) : this.position;
    if (pending.purpose === 'sync') {
      if (this.gen > 1)
        this.log.info({ from: worker.rank, ...pos }, 'replicas restored from the most advanced survivor');
      return this.broadcastState(m.weights, m.optimizer, pos);
    }
    void this.saveCheckpoint(pos, m.weights, m.optimizer);
  }

  private broadcastState(weights: Uint8Array, optimizer: Uint8Array, pos: Position): void {
    this.position = pos;
    this.state.newGeneration(this.members.length, pos.step);
    for (const w of this.members)
      sendMessage(w.ws, { type: 'start', gen: this.gen, epoch: pos.epoch, step: pos.step, weights, optimizer });
    this.startPlan(pos);
  }

  private startPlan(pos: Position): void {
    const n = this.members.length;
    const epochSamples = this.d.data.train.count;
    this.plan = planFrom(pos, epochSamples, n, this.d.train.batchSize);
    this.phase = 'training';
    this.d.progress.begin(`epoch ${pos.epoch + 1}/${this.d.train.epochs}`, epochSamples);
    for (const w of this.members) {
      sendMessage(
        w.ws,
        planShard(this.d.data, {
          gen: this.gen,
          plan: this.plan,
          rank: w.rank,
          seed: this.d.train.seed,
          hasData: w.hasData,
        }),
      );
    }
    this.log.info(
      { epoch: pos.epoch, offset: this.plan.offset, steps: this.plan.steps, firstStep: pos.step, worldSize: n },
      'shards sent',
    );
    this.emit({
      kind: 'epochStarted',
      epoch: pos.epoch,
      epochs: this.d.train.epochs,
      samples: epochSamples - this.plan.offset,
    });
  }

  private onMetrics(worker: WorkerRecord, msg: MessageOf<'metrics'>): void {
    const mismatched = this.state.addRecords(worker.rank, msg.records);
    for (const r of msg.records)
      this.metricsFile.write(`${JSON.stringify({ rank: worker.rank, gen: msg.gen, ...r })}\n`);
    this.emit({ kind: 'steps', gen: msg.gen, rank: worker.rank, records: msg.records });
    if (mismatched.length > 0) {
      this.log.error({ steps: mismatched }, 'replica parameters differ between workers');
      this.notice('error', 'replica parameters differ between workers', { steps: mismatched });
    }
    if (this.plan) {
      const done = positionAt(this.plan, this.state.lastStep + 1).consumed - this.plan.offset;
      this.d.progress.update(this.plan.offset + done, { loss: this.state.latestLoss, workers: this.members.length });
    }
    if (this.d.opts.checkpointEvery > 0 && this.state.lastStep + 1 >= this.nextCheckpointStep) this.requestCheckpoint();
  }

  private requestCheckpoint(): void {
    if (this.pendingWeights || this.phase !== 'training' || !this.members[0]) return;
    this.pendingWeights = { purpose: 'checkpoint', gen: this.gen };
    sendMessage(this.members[0].ws, { type: 'requestWeights', gen: this.gen });
  }

  private async saveCheckpoint(pos: Position, weights: Uint8Array, optimizer: Uint8Array): Promise<void> {
    this.nextCheckpointStep = pos.step + Math.max(1, this.d.opts.checkpointEvery);
    try {
      const file = await this.d.checkpoints.save(
        {
          runId: this.runId,
          step: pos.step,
          epoch: pos.epoch,
          consumed: pos.consumed,
          generation: this.gen,
          config: { ...this.d.train },
          extra: { history: this.state.history, totalSamples: this.state.totalSamples },
        },
        bytesToFloat32(weights),
        bytesToFloat32(optimizer),
      );
      this.log.info({ file, ...pos }, 'checkpoint written');
      this.notice('info', `checkpoint at step ${pos.step}`, { file: path.basename(file), epoch: pos.epoch });
    } catch (err) {
      this.log.error({ err }, 'checkpoint failed');
      this.notice('error', 'checkpoint failed', { error: (err as Error).message });
    }
  }

  private maybeFinishEpoch(epoch: number): void {
    if (this.phase !== 'training' || !this.plan || epoch !== this.plan.epoch || !this.state.epochComplete(epoch))
      return;
    const outcome = this.state.finishEpoch(epoch);
    this.emit({ kind: 'epochFinished', outcome });
    const rate = outcome.samples / Math.max(1e-9, outcome.trainSeconds);
    this.log.info({ ...outcome, samplesPerSec: rate }, 'epoch finished');
    this.d.progress.line(
      `epoch ${outcome.epoch}: train loss ${outcome.trainLoss.toFixed(4)}  test accuracy ${(100 * outcome.testAccuracy).toFixed(2)}%  ` +
        `(${outcome.trainSeconds.toFixed(1)} s, ${rate.toFixed(0)} samples/s, ${this.members.length} workers)`,
    );
    this.position = { epoch: epoch + 1, consumed: 0, step: this.plan.firstStep + this.plan.steps };
    const target = this.d.train.targetAccuracy;
    if (target > 0 && outcome.testAccuracy >= target) return this.endTraining(`target accuracy ${target} reached`);
    if (epoch + 1 >= this.d.train.epochs) return this.endTraining('all epochs done');
    this.startPlan(this.position);
    this.requestCheckpoint(); // answered at rank 0's next step boundary, at the start of the new epoch
  }

  /** Training is done: keep rank 0's final weights as the saved model, then end the run. */
  private endTraining(reason: string): void {
    if (!this.d.model || !this.members[0]) return this.finish('finished', reason);
    const accuracy = this.state.history.at(-1)?.testAccuracy;
    this.finalModel = new FinalModelFetch(this.d.model, this.members[0].ws, this.gen, this.log, this.d.progress);
    void this.finalModel.fetch(accuracy).then((note) => this.finish('finished', reason + note));
  }

  private onStall(worker: WorkerRecord, m: MessageOf<'stall'>): void {
    worker.log.warn({ step: m.step, waitingMs: m.waitingMs, peerRank: m.peerRank }, 'stalled step');
    this.notice(
      'warn',
      `rank ${worker.rank} waited ${(m.waitingMs / 1000).toFixed(0)} s for rank ${m.peerRank} at step ${m.step}`,
    );
    const reporters = this.stallReports.get(m.step) ?? new Set<number>();
    reporters.add(worker.rank);
    this.stallReports.set(m.step, reporters);
    if (this.d.opts.stallAbortMs <= 0 || m.waitingMs < this.d.opts.stallAbortMs || this.phase !== 'training') return;
    // Everyone waiting reports; the worker(s) that do not are the ones holding the step up.
    const stuck = this.members.filter((w) => !reporters.has(w.rank));
    if (stuck.length > 0 && stuck.length < this.members.length)
      for (const w of stuck) this.evict(w, `stalled step ${m.step} for ${m.waitingMs} ms`);
  }

  private checkHeartbeats(): void {
    const limit = this.d.opts.heartbeatMs * this.d.opts.heartbeatMisses;
    const now = Date.now();
    for (const w of this.workers.values())
      if (now - w.lastSeen > limit) this.evict(w, `no heartbeat for ${now - w.lastSeen} ms`);
  }

  private evict(w: WorkerRecord, reason: string): void {
    w.log.warn({ reason }, 'evicting worker');
    this.notice('warn', `evicted rank ${w.rank} (${w.host}): ${reason}`);
    w.ws.close(CLOSE_CODES.evicted, 'evicted');
    w.ws.terminate();
  }

  private onFailed(worker: WorkerRecord, msg: MessageOf<'failed'>): void {
    worker.log.error({ code: msg.code, message: msg.message }, 'worker failed');
    this.finish('failed', `rank ${worker.rank} failed: ${msg.message} [${msg.code}]`);
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    const worker = this.workers.get(ws);
    if (!worker) return;
    this.workers.delete(ws);
    const member = this.members.includes(worker);
    worker.log.info({ code, reason }, 'worker link closed');
    this.emit({
      kind: 'workerLeft',
      worker: this.view(worker, this.summary ? 'stopped' : 'lost'),
      reason: reason || `close code ${code}`,
    });
    if (this.summary || !member) return;
    this.d.progress.line(`lost worker rank ${worker.rank} (${worker.host}); re-forming the ring`);
    this.notice('warn', `lost rank ${worker.rank} (${worker.host})`, { code });
    this.reform(`lost rank ${worker.rank}`);
  }

  private onRendezvousTimeout(): void {
    if (this.phase !== 'rendezvous') return;
    const err = new RendezvousTimeoutError(this.workers.size, this.d.opts.minWorkers, this.d.opts.rendezvousTimeoutMs);
    this.log.error({ err }, 'rendezvous timed out');
    this.finish('failed', err.message);
  }

  /** End the run once: stop every worker, write the summary, resolve `done`. */
  finish(outcome: ClusterSummary['outcome'], reason: string): void {
    if (this.summary) return;
    this.phase = outcome === 'finished' ? 'finished' : 'failed';
    for (const t of [...this.timers, this.formingTimer]) clearTimeout(t);
    const exitCode = exitCodeOfOutcome(outcome);
    for (const w of this.workers.values()) sendMessage(w.ws, { type: 'stop', reason, exitCode });
    this.d.progress.stop();
    this.summary = this.buildSummary(outcome, outcome === 'finished' ? undefined : reason);
    this.log.info(
      { outcome, reason, testAccuracy: this.summary.testAccuracy, wallSeconds: this.summary.wallSeconds },
      'run ended',
    );
    this.metricsFile.end();
    if (this.d.summaryJson) {
      fs.mkdirSync(path.dirname(path.resolve(this.d.summaryJson)), { recursive: true });
      fs.writeFileSync(this.d.summaryJson, `${JSON.stringify(this.summary, null, 2)}\n`);
    }
    this.emit({ kind: 'runEnded', summary: this.summary });
    this.resolveDone(this.summary);
  }

  private buildSummary(outcome: ClusterSummary['outcome'], error?: string): ClusterSummary {
    const s = this.state;
    const last = s.history[s.history.length - 1];
    return {
      model: this.d.train.model,
      backend: [...new Set(this.members.map((w) => w.backend))].join(',') || 'none',
      epochs: s.history.length,
      steps: Math.max(this.position.step, s.lastStep + 1),
      testAccuracy: last?.testAccuracy ?? 0,
      samplesPerSec: s.samplesPerSec(),
      wallSeconds: (performance.now() - this.started) / 1000,
      workers: this.members.length,
      generations: this.gen,
      phaseMeanMs: s.phaseMeans(),
      hashChecks: s.hashChecks,
      hashMismatches: s.hashMismatches,
      nonFiniteSteps: s.nonFiniteSteps,
      history: s.history,
      waits: s.waits.workers(),
      outcome,
      ...(error ? { error } : {}),
    };
  }

  status(): Record<string, unknown> {
    return {
      runId: this.runId,
      phase: this.phase,
      generation: this.gen,
      position: this.position,
      workers: this.workers.size,
    };
  }
}
