/**
 * The coordinator: the control plane of a run. It accepts workers, assigns ranks and ring neighbours under a
 * membership generation, has rank 0's initial weights broadcast, plans each epoch's shards, collects metrics and the
 * sharded evaluation, and stops the cluster at the end. Gradients never pass through it.
 *
 * Run states: rendezvous -> starting (ring forming, initial weights) -> training -> finished | failed.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import type { TrainConfig } from '../shared/config.js';
import { limitSplit, loadMnist, type MnistDataset } from '../shared/data/mnist.js';
import { CLOSE_CODES, ProtocolError, RendezvousTimeoutError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { ProgressView } from '../shared/progress.js';
import { decodeFrame, PROTOCOL_VERSION, type Message, type MessageOf, type WorkerToCoordinatorMessage } from '../shared/protocol.js';
import { shardLength } from '../shared/sampler.js';
import { closeWithError, noDelay, rawToBytes, sendMessage } from '../shared/ws-util.js';
import { planShard } from './data-plan.js';
import { RunEvents, type RunEvent, type RunObserver, type WorkerView } from './events.js';
import { RunState, type EpochOutcome, type PhaseMeans } from './run-state.js';

export interface CoordinatorConfig {
  host: string;
  port: number;
  minWorkers: number;
  train: TrainConfig;
  dataDir?: string;
  runDir: string;
  summaryJson?: string;
  /** Give up when fewer than minWorkers joined within this time. */
  rendezvousTimeoutMs: number;
  /** Largest control message accepted from a worker. */
  maxPayloadBytes: number;
  /** Workers hash their parameters every this many steps (0 = never); the coordinator compares the hashes. */
  checkEvery: number;
  /** Workers send their step records every this many steps. */
  reportEvery: number;
  log: Logger;
  progress: ProgressView;
  /** Observers of the run's events (dashboard, metrics, timeline). */
  observers?: RunObserver[];
}

export const COORDINATOR_DEFAULTS = {
  host: '0.0.0.0',
  port: 29500,
  minWorkers: 1,
  rendezvousTimeoutMs: 300_000,
  maxPayloadBytes: 64 * 1024 * 1024,
  checkEvery: 100,
  reportEvery: 10,
};

export interface ClusterSummary {
  model: string;
  backend: string;
  epochs: number;
  steps: number;
  testAccuracy: number;
  samplesPerSec: number;
  wallSeconds: number;
  workers: number;
  phaseMeanMs: PhaseMeans;
  hashChecks: number;
  hashMismatches: number;
  history: EpochOutcome[];
  outcome: 'finished' | 'failed' | 'interrupted';
  error?: string;
}

export interface CoordinatorHandle {
  port: number;
  runId: string;
  /** Resolves when the run ends (finished, failed or closed). */
  done: Promise<ClusterSummary>;
  close(reason?: string): Promise<ClusterSummary>;
}

type RunPhase = 'rendezvous' | 'starting' | 'training' | 'finished' | 'failed';

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
  sentTest: boolean;
  log: Logger;
}

class Coordinator {
  readonly runId = randomUUID();
  private phase: RunPhase = 'rendezvous';
  private gen = 0;
  private epoch = 0;
  private readonly workers = new Map<WebSocket, WorkerRecord>();
  private ranked: WorkerRecord[] = [];
  private state!: RunState;
  private readonly started = performance.now();
  private rendezvousTimer?: NodeJS.Timeout;
  private metricsFile?: fs.WriteStream;
  private resolveDone!: (s: ClusterSummary) => void;
  readonly done = new Promise<ClusterSummary>((resolve) => { this.resolveDone = resolve; });
  private summary?: ClusterSummary;
  private readonly log: Logger;
  private readonly events = new RunEvents();

  constructor(private readonly cfg: CoordinatorConfig, private readonly data: MnistDataset) {
    this.log = cfg.log;
    for (const o of cfg.observers ?? []) this.events.add(o);
  }

  private emit(event: RunEvent): void {
    this.events.emit(event, (err) => this.log.warn({ err, kind: event.kind }, 'run observer failed'));
  }

  private view(w: WorkerRecord, state: WorkerView['state']): WorkerView {
    return { id: w.id, rank: w.rank, host: w.host, backend: w.backend, state };
  }

  begin(): void {
    fs.mkdirSync(this.cfg.runDir, { recursive: true });
    this.metricsFile = fs.createWriteStream(path.join(this.cfg.runDir, 'metrics.jsonl'));
    this.rendezvousTimer = setTimeout(() => this.onRendezvousTimeout(), this.cfg.rendezvousTimeoutMs);
    this.rendezvousTimer.unref();
    const t = this.cfg.train;
    this.emit({ kind: 'runStarted', runId: this.runId, model: t.model, epochs: t.epochs, minWorkers: this.cfg.minWorkers, batchSize: t.batchSize });
  }

  accept(ws: WebSocket, remote: string): void {
    noDelay(ws);
    ws.on('message', (data) => this.onRaw(ws, rawToBytes(data)));
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString()));
    ws.on('error', (err) => this.log.warn({ err, remote }, 'worker link error'));
  }

  private onRaw(ws: WebSocket, bytes: Uint8Array): void {
    let message: Message;
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'control') throw new ProtocolError('gradient chunks never go to the coordinator');
      message = frame.message;
    } catch (err) {
      this.log.warn({ err, worker: this.workers.get(ws)?.id }, 'bad message from worker, closing its link');
      closeWithError(ws, err);
      return;
    }
    try {
      this.dispatch(ws, message);
    } catch (err) {
      this.log.error({ err, type: message.type }, 'failed to handle worker message');
      closeWithError(ws, err);
    }
  }

  private dispatch(ws: WebSocket, message: Message): void {
    if (message.type === 'hello') return this.onHello(ws, message);
    const worker = this.workers.get(ws);
    if (!worker) throw new ProtocolError(`'${message.type}' before 'hello'`);
    if (!isFromWorker(message)) throw new ProtocolError(`'${message.type}' is not a worker message`);
    if ('gen' in message && message.gen !== this.gen) {
      worker.log.debug({ gen: message.gen, current: this.gen, type: message.type }, 'dropping message of another generation');
      return;
    }
    switch (message.type) {
      case 'ready': return this.onReady(worker);
      case 'weights': return this.onWeights(worker, message);
      case 'metrics': return this.onMetrics(worker, message);
      case 'evalResult': return this.onEvalResult(message);
      case 'epochDone': return this.onEpochDone(worker, message);
      case 'failed': return this.onFailed(worker, message);
    }
  }

  private onHello(ws: WebSocket, msg: MessageOf<'hello'>): void {
    if (this.workers.has(ws)) throw new ProtocolError('second hello on one link');
    if (this.phase !== 'rendezvous') {
      this.log.warn({ workerId: msg.workerId, host: msg.host }, 'worker arrived after the run started; turned away');
      ws.close(CLOSE_CODES.goingAway, 'run already started');
      return;
    }
    const log = this.log.child({ workerId: msg.workerId, host: msg.host });
    const worker: WorkerRecord = {
      id: msg.workerId, ws, host: msg.host, ringHost: msg.ringHost, ringPort: msg.ringPort, hasData: msg.hasData,
      backend: msg.backend, rank: -1, ready: false, sentTest: false, log,
    };
    this.workers.set(ws, worker);
    sendMessage(ws, { type: 'welcome', protocolVersion: PROTOCOL_VERSION, workerId: msg.workerId, runId: this.runId });
    log.info({ joined: this.workers.size, wanted: this.cfg.minWorkers, backend: msg.backend, hasData: msg.hasData }, 'worker joined');
    this.cfg.progress.line(`worker ${this.workers.size}/${this.cfg.minWorkers} joined from ${msg.host} (${msg.backend})`);
    this.emit({ kind: 'workerJoined', worker: this.view(worker, 'joined') });
    if (this.workers.size >= this.cfg.minWorkers) this.formRing();
  }

  /** Rank the workers in join order and tell each its ring successor, under a new generation. */
  private formRing(): void {
    clearTimeout(this.rendezvousTimer);
    this.phase = 'starting';
    this.gen++;
    this.ranked = [...this.workers.values()];
    const n = this.ranked.length;
    this.state = new RunState(n);
    const config = { ...this.cfg.train, checkEvery: this.cfg.checkEvery, reportEvery: this.cfg.reportEvery };
    this.ranked.forEach((w, rank) => {
      w.rank = rank;
      w.log = w.log.child({ rank });
      const next = this.ranked[(rank + 1) % n]!;
      sendMessage(w.ws, {
        type: 'assign', gen: this.gen, rank, worldSize: n, predecessorRank: (rank - 1 + n) % n,
        successor: { host: next.ringHost, port: next.ringPort, rank: (rank + 1) % n }, config,
      });
    });
    this.log.info({ gen: this.gen, worldSize: n }, 'ring formed');
    this.emit({ kind: 'ringFormed', gen: this.gen, workers: this.ranked.map((w) => this.view(w, 'joined')) });
  }

  private onReady(worker: WorkerRecord): void {
    worker.ready = true;
    worker.log.info({ gen: this.gen }, 'ring links ready');
    if (this.phase === 'starting' && this.ranked.every((w) => w.ready)) {
      sendMessage(this.ranked[0]!.ws, { type: 'requestWeights', gen: this.gen });
    }
  }

  /** Rank 0's initial weights: broadcast them so every replica starts identical, then start epoch 0. */
  private onWeights(worker: WorkerRecord, msg: MessageOf<'weights'>): void {
    if (this.phase !== 'starting' || worker.rank !== 0) throw new ProtocolError(`unexpected weights from rank ${worker.rank}`);
    this.phase = 'training';
    for (const w of this.ranked) {
      sendMessage(w.ws, { type: 'start', gen: this.gen, epoch: 0, step: 0, weights: msg.weights, optimizer: msg.optimizer });
    }
    this.log.info({ gen: this.gen, bytes: msg.weights.byteLength }, 'initial weights broadcast from rank 0');
    this.startEpoch(0);
  }

  private startEpoch(epoch: number): void {
    this.epoch = epoch;
    const n = this.ranked.length;
    this.cfg.progress.begin(`epoch ${epoch + 1}/${this.cfg.train.epochs}`, shardLength(this.data.train.count, n) * n);
    for (const w of this.ranked) {
      const shard = planShard(this.data, {
        gen: this.gen, epoch, rank: w.rank, worldSize: n, seed: this.cfg.train.seed, hasData: w.hasData, includeTest: !w.sentTest,
      });
      w.sentTest = true;
      sendMessage(w.ws, shard);
    }
    this.log.info({ epoch, worldSize: n }, 'epoch started');
    this.emit({ kind: 'epochStarted', epoch, epochs: this.cfg.train.epochs, samples: shardLength(this.data.train.count, n) * n });
  }

  private onMetrics(worker: WorkerRecord, msg: MessageOf<'metrics'>): void {
    const mismatched = this.state.addRecords(worker.rank, msg.records);
    for (const r of msg.records) this.metricsFile?.write(`${JSON.stringify({ rank: worker.rank, gen: msg.gen, ...r })}\n`);
    this.emit({ kind: 'steps', gen: msg.gen, rank: worker.rank, records: msg.records });
    if (mismatched.length > 0) {
      this.log.error({ steps: mismatched }, 'replica parameters differ between workers');
      this.emit({ kind: 'notice', level: 'error', message: 'replica parameters differ between workers', fields: { steps: mismatched } });
    }
    const p = this.state.history.reduce((s, h) => s + h.samples, 0);
    this.cfg.progress.update(this.state.totalSamples - p, { loss: this.state.latestLoss, workers: this.ranked.length });
  }

  private onEvalResult(msg: MessageOf<'evalResult'>): void {
    this.state.addEval(msg);
    this.maybeFinishEpoch(msg.epoch);
  }

  private onEpochDone(worker: WorkerRecord, msg: MessageOf<'epochDone'>): void {
    worker.log.debug({ epoch: msg.epoch, steps: msg.steps }, 'worker finished epoch');
    this.state.addEpochDone(msg);
    this.maybeFinishEpoch(msg.epoch);
  }

  private maybeFinishEpoch(epoch: number): void {
    if (this.phase !== 'training' || epoch !== this.epoch || !this.state.epochComplete(epoch)) return;
    const outcome = this.state.finishEpoch(epoch);
    this.emit({ kind: 'epochFinished', outcome });
    this.log.info({ ...outcome, samplesPerSec: outcome.samples / Math.max(1e-9, outcome.trainSeconds) }, 'epoch finished');
    this.cfg.progress.line(
      `epoch ${outcome.epoch}: train loss ${outcome.trainLoss.toFixed(4)}  test accuracy ${(100 * outcome.testAccuracy).toFixed(2)}%  ` +
      `(${outcome.trainSeconds.toFixed(1)} s, ${(outcome.samples / Math.max(1e-9, outcome.trainSeconds)).toFixed(0)} samples/s)`,
    );
    const target = this.cfg.train.targetAccuracy;
    if (target > 0 && outcome.testAccuracy >= target) return this.finish('finished', `target accuracy ${target} reached`);
    if (epoch + 1 >= this.cfg.train.epochs) return this.finish('finished', 'all epochs done');
    this.startEpoch(epoch + 1);
  }

  private onFailed(worker: WorkerRecord, msg: MessageOf<'failed'>): void {
    worker.log.error({ code: msg.code, message: msg.message }, 'worker failed');
    this.finish('failed', `rank ${worker.rank} failed: ${msg.message} [${msg.code}]`);
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    const worker = this.workers.get(ws);
    if (!worker) return;
    this.workers.delete(ws);
    worker.log.info({ code, reason }, 'worker link closed');
    const lost = this.phase === 'starting' || this.phase === 'training';
    this.emit({ kind: 'workerLeft', worker: this.view(worker, lost ? 'lost' : 'stopped'), reason: reason || `close code ${code}` });
    if (this.phase === 'rendezvous') return;
    if (this.phase === 'starting' || this.phase === 'training') {
      this.finish('failed', `lost worker rank ${worker.rank} (${worker.host}, close code ${code})`);
    }
  }

  private onRendezvousTimeout(): void {
    if (this.phase !== 'rendezvous') return;
    const err = new RendezvousTimeoutError(this.workers.size, this.cfg.minWorkers, this.cfg.rendezvousTimeoutMs);
    this.log.error({ err }, 'rendezvous timed out');
    this.finish('failed', err.message);
  }

  /** End the run once: stop every worker, write the summary, resolve `done`. */
  finish(outcome: ClusterSummary['outcome'], reason: string): void {
    if (this.summary) return;
    this.phase = outcome === 'finished' ? 'finished' : 'failed';
    clearTimeout(this.rendezvousTimer);
    const exitCode = outcome === 'finished' ? 0 : outcome === 'interrupted' ? 130 : 1;
    for (const w of this.workers.values()) sendMessage(w.ws, { type: 'stop', reason, exitCode });
    this.cfg.progress.stop();
    this.summary = this.buildSummary(outcome, outcome === 'finished' ? undefined : reason);
    this.log.info({ outcome, reason, testAccuracy: this.summary.testAccuracy, wallSeconds: this.summary.wallSeconds }, 'run ended');
    this.metricsFile?.end();
    this.emit({ kind: 'runEnded', summary: this.summary });
    if (this.cfg.summaryJson) {
      fs.mkdirSync(path.dirname(path.resolve(this.cfg.summaryJson)), { recursive: true });
      fs.writeFileSync(this.cfg.summaryJson, `${JSON.stringify(this.summary, null, 2)}\n`);
    }
    this.resolveDone(this.summary);
  }

  private buildSummary(outcome: ClusterSummary['outcome'], error?: string): ClusterSummary {
    const s = this.state;
    const last = s?.history[s.history.length - 1];
    return {
      model: this.cfg.train.model,
      backend: [...new Set(this.ranked.map((w) => w.backend))].join(',') || 'none',
      epochs: s?.history.length ?? 0,
      steps: (s?.lastStep ?? -1) + 1,
      testAccuracy: last?.testAccuracy ?? 0,
      samplesPerSec: s?.samplesPerSec() ?? 0,
      wallSeconds: (performance.now() - this.started) / 1000,
      workers: this.ranked.length,
      phaseMeanMs: s?.phaseMeans() ?? { dataMs: 0, computeMs: 0, allreduceMs: 0, applyMs: 0 },
      hashChecks: s?.hashChecks ?? 0,
      hashMismatches: s?.hashMismatches ?? 0,
      history: s?.history ?? [],
      outcome,
      ...(error ? { error } : {}),
    };
  }

  status(): Record<string, unknown> {
    return { runId: this.runId, phase: this.phase, generation: this.gen, epoch: this.epoch, workers: this.workers.size };
  }
}

function isFromWorker(m: Message): m is Exclude<WorkerToCoordinatorMessage, { type: 'hello' }> {
  return ['ready', 'weights', 'metrics', 'evalResult', 'epochDone', 'failed'].includes(m.type);
}

async function loadRunData(cfg: CoordinatorConfig): Promise<MnistDataset> {
  const data = await loadMnist(cfg.dataDir);
  const { trainLimit, testLimit } = cfg.train;
  return {
    ...data,
    train: trainLimit > 0 ? limitSplit(data.train, trainLimit) : data.train,
    test: testLimit > 0 ? limitSplit(data.test, testLimit) : data.test,
  };
}

function handleHttp(coord: Coordinator, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  if (url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  } else if (url === '/api/status') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(coord.status()));
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** Start a coordinator; resolves once it listens. */
export async function startCoordinator(cfg: CoordinatorConfig): Promise<CoordinatorHandle> {
  const data = await loadRunData(cfg);
  cfg.log.info({ source: data.source, train: data.train.count, test: data.test.count }, 'dataset loaded');
  const coord = new Coordinator(cfg, data);
  const server = http.createServer((req, res) => handleHttp(coord, req, res));
  const wss = new WebSocketServer({ server, maxPayload: cfg.maxPayloadBytes, perMessageDeflate: false });
  wss.on('connection', (ws, req) => coord.accept(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
  wss.on('error', (err) => cfg.log.error({ err }, 'websocket server error'));
  const port = await listen(server, cfg.host, cfg.port);
  coord.begin();
  cfg.log.info({ host: cfg.host, port, runId: coord.runId, minWorkers: cfg.minWorkers }, 'coordinator listening');
  let closed = false;
  const shutdown = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const ws of wss.clients) ws.close(CLOSE_CODES.goingAway, 'coordinator shutting down');
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  // The stop messages are queued before the close frames, so closing right away still delivers them.
  void coord.done.then(() => shutdown());
  return {
    port,
    runId: coord.runId,
    done: coord.done,
    async close(reason = 'closed') {
      coord.finish('interrupted', reason);
      await shutdown();
      return coord.done;
    },
  };
}

