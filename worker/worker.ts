/**
 * A worker: joins the coordinator, gets a rank and ring neighbours, receives the initial weights and its shard of
 * each epoch, and trains step by step with a ring allreduce over direct links to its neighbours.
 *
 * Session states: connecting -> joined (welcome) -> assigned (ring forming) -> ready -> training <-> waiting (between
 * epochs) -> stopped. Control messages are handled in `onMessage`, one small handler per type.
 */
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { validateTrainConfig, type TrainConfig } from '../shared/config.js';
import { loadMnist, type MnistDataset, type MnistSplit } from '../shared/data/mnist.js';
import { ProtocolError, RingtrainError, StepAbortedError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import {
  bytesToFloat32, bytesToUint32, decodeFrame, float32ToBytes, PROTOCOL_VERSION,
  type Message, type MessageOf, type StepRecord,
} from '../shared/protocol.js';
import { selectBackend, type BackendChoice } from '../shared/tf/backend.js';
import { evaluateRange } from '../shared/train/batches.js';
import { buildModel } from '../shared/train/models.js';
import { Replica } from '../shared/train/replica.js';
import { noDelay, rawToBytes, sendMessage } from '../shared/ws-util.js';
import { runEpoch, type EpochPlan } from './epoch-runner.js';
import { RingTransport } from './ring-transport.js';

export interface WorkerConfig {
  coordinator: string;
  /** Ring listener address. */
  listenHost: string;
  listenPort: number;
  /** Address peers dial to reach this worker's ring listener (default: this machine's hostname). */
  advertise?: string;
  backend: BackendChoice;
  dataDir?: string;
  maxPayloadBytes: number;
  ringConnectTimeoutMs: number;
  log: Logger;
}

export const WORKER_DEFAULTS = { listenHost: '0.0.0.0', listenPort: 0, maxPayloadBytes: 256 * 1024 * 1024, ringConnectTimeoutMs: 30_000 };

export interface WorkerHandle {
  /** The ring listener's port. */
  port: number;
  /** Resolves with the exit code the process should end with. */
  done: Promise<number>;
  close(): Promise<void>;
}

type SessionState = 'connecting' | 'joined' | 'assigned' | 'ready' | 'training' | 'waiting' | 'stopped';

interface RunSettings { train: TrainConfig; checkEvery: number; reportEvery: number }

class WorkerSession {
  private state: SessionState = 'connecting';
  private readonly id = randomUUID();
  private gen = 0;
  private rank = -1;
  private worldSize = 0;
  private settings?: RunSettings;
  private replica?: Replica;
  private ws?: WebSocket;
  private pendingRecords: StepRecord[] = [];
  private stopRequested = false;
  private localTest?: MnistSplit;
  private resolveDone!: (code: number) => void;
  readonly done = new Promise<number>((resolve) => { this.resolveDone = resolve; });
  private log: Logger;

  constructor(
    private readonly cfg: WorkerConfig, private readonly backend: string, private readonly data: MnistDataset | undefined,
    private readonly ring: RingTransport, private readonly ringPort: number,
  ) {
    this.log = cfg.log;
    ring.onPeerLost((err) => this.fail(err));
  }

  connect(): void {
    const ws = new WebSocket(this.cfg.coordinator, { maxPayload: this.cfg.maxPayloadBytes, perMessageDeflate: false });
    this.ws = ws;
    ws.on('open', () => {
      noDelay(ws);
      sendMessage(ws, {
        type: 'hello', protocolVersion: PROTOCOL_VERSION, workerId: this.id, host: os.hostname(),
        ringHost: this.cfg.advertise ?? os.hostname(), ringPort: this.ringPort, hasData: this.data !== undefined,
        backend: this.backend, pid: process.pid,
      });
    });
    ws.on('message', (data) => this.onRaw(rawToBytes(data)));
    ws.on('close', (code, reason) => this.onCoordinatorClosed(code, reason.toString()));
    ws.on('error', (err) => this.log.warn({ err, coordinator: this.cfg.coordinator }, 'coordinator link error'));
  }

  private onRaw(bytes: Uint8Array): void {
    let message: Message;
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'control') throw new ProtocolError('gradient chunk on the control link');
      message = frame.message;
    } catch (err) {
      this.log.error({ err }, 'bad message from the coordinator');
      return this.fail(err);
    }
    if ('gen' in message && message.gen < this.gen) return; // fenced: an older membership's message
    try {
      this.onMessage(message);
    } catch (err) {
      this.fail(err);
    }
  }

  private onMessage(m: Message): void {
    switch (m.type) {
      case 'welcome': return this.onWelcome(m);
      case 'assign': return void this.onAssign(m).catch((err: unknown) => this.fail(err));
      case 'requestWeights': return void this.onRequestWeights(m).catch((err: unknown) => this.fail(err));
      case 'start': return void this.onStart(m).catch((err: unknown) => this.fail(err));
      case 'shard': return void this.onShard(m).catch((err: unknown) => this.fail(err));
      case 'stop': return this.onStop(m);
      default: throw new ProtocolError(`'${m.type}' is not a coordinator message`);
    }
  }

  private onWelcome(m: MessageOf<'welcome'>): void {
    this.state = 'joined';
    this.log = this.cfg.log.child({ runId: m.runId });
    this.log.info({ coordinator: this.cfg.coordinator }, 'joined the run');
  }

  private async onAssign(m: MessageOf<'assign'>): Promise<void> {
    this.state = 'assigned';
    this.gen = m.gen;
    this.rank = m.rank;
    this.worldSize = m.worldSize;
    this.settings = readSettings(m.config);
    this.log = this.log.child({ rank: m.rank });
    if (!this.replica) {
      const t = this.settings.train;
      this.replica = new Replica(buildModel(t.model, t.seed), { name: t.optimizer, lr: t.lr, momentum: t.momentum });
    }
    await this.ring.connect({ gen: m.gen, rank: m.rank, worldSize: m.worldSize, successor: m.successor, predecessorRank: m.predecessorRank });
    if (m.gen !== this.gen) return;
    this.state = 'ready';
    this.log.info({ gen: m.gen, worldSize: m.worldSize }, 'ring links up');
    this.send({ type: 'ready', gen: m.gen, rank: m.rank });
  }

  private async onRequestWeights(m: MessageOf<'requestWeights'>): Promise<void> {
    const replica = this.requireReplica();
    const weights = replica.getWeights();
    const optimizer = await replica.getOptimizerState();
    this.send({ type: 'weights', gen: m.gen, rank: this.rank, step: 0, epoch: 0, weights: float32ToBytes(weights), optimizer: float32ToBytes(optimizer) });
  }

  private async onStart(m: MessageOf<'start'>): Promise<void> {
    const replica = this.requireReplica();
    replica.setWeights(bytesToFloat32(m.weights));
    if (m.optimizer.byteLength > 0) await replica.setOptimizerState(bytesToFloat32(m.optimizer));
    this.state = 'waiting';
    this.log.info({ gen: m.gen, epoch: m.epoch, step: m.step }, 'weights received; training starts');
  }

  private async onShard(m: MessageOf<'shard'>): Promise<void> {
    const settings = this.settings!;
    const replica = this.requireReplica();
    const { split, order } = this.trainData(m);
    const test = this.testRange(m);
    this.state = 'training';
    const plan: EpochPlan = {
      epoch: m.epoch, order, split, batchSize: settings.train.batchSize, checkEvery: settings.checkEvery,
      schedule: { baseLr: settings.train.lr, decay: settings.train.lrDecay, scaleByWorldSize: settings.train.scaleLr, warmupEpochs: settings.train.warmupEpochs },
    };
    const result = await runEpoch(replica, plan, { rank: this.rank, worldSize: this.worldSize, gen: m.gen, links: this.ring }, {
      onStep: (r) => this.record(r, settings.reportEvery),
      shouldStop: () => this.stopRequested || m.gen !== this.gen,
    });
    this.flushRecords();
    const counts = evaluateRange(replica, test.split, test.start, test.end);
    this.send({ type: 'evalResult', gen: m.gen, rank: this.rank, epoch: m.epoch, ...counts });
    this.send({ type: 'epochDone', gen: m.gen, rank: this.rank, epoch: m.epoch, steps: result.steps, trainMs: result.trainMs });
    this.state = 'waiting';
  }

  /** Shipped samples (worker without data) are trained in shipped order; local data is indexed. */
  private trainData(m: MessageOf<'shard'>): { split: MnistSplit; order: Uint32Array } {
    const indices = bytesToUint32(m.indices);
    if (m.images && m.labels) {
      const split = { images: m.images, labels: m.labels, count: m.labels.length, rows: 28, cols: 28 };
      return { split, order: Uint32Array.from({ length: split.count }, (_, i) => i) };
    }
    if (!this.data) throw new ProtocolError('shard without samples for a worker without data');
    return { split: this.data.train, order: indices };
  }

  private testRange(m: MessageOf<'shard'>): { split: MnistSplit; start: number; end: number } {
    if (m.testImages && m.testLabels) {
      this.localTest = { images: m.testImages, labels: m.testLabels, count: m.testLabels.length, rows: 28, cols: 28 };
    }
    if (this.localTest) return { split: this.localTest, start: 0, end: this.localTest.count };
    if (!this.data) throw new ProtocolError('no evaluation samples for a worker without data');
    return { split: this.data.test, start: m.testStart, end: m.testEnd };
  }

  private record(r: StepRecord, reportEvery: number): void {
    this.pendingRecords.push(r);
    if (this.pendingRecords.length >= reportEvery) this.flushRecords();
  }

  private flushRecords(): void {
    if (this.pendingRecords.length === 0) return;
    this.send({ type: 'metrics', gen: this.gen, rank: this.rank, records: this.pendingRecords });
    this.pendingRecords = [];
  }

  private onStop(m: MessageOf<'stop'>): void {
    this.log.info({ reason: m.reason, exitCode: m.exitCode }, 'stop from the coordinator');
    this.end(m.exitCode);
  }

  private onCoordinatorClosed(code: number, reason: string): void {
    if (this.state === 'stopped') return;
    this.log.error({ code, reason }, 'lost the coordinator');
    this.end(1);
  }

  private fail(err: unknown): void {
    if (this.state === 'stopped') return;
    if (err instanceof StepAbortedError && this.stopRequested) return;
    const code = err instanceof RingtrainError ? err.code : 'INTERNAL';
    this.log.error({ err, code }, 'worker failed');
    this.send({ type: 'failed', gen: Math.max(1, this.gen), rank: this.rank, code, message: String((err as Error)?.message ?? err) });
    this.end(1);
  }

  private send(m: Message): void {
    if (this.ws) sendMessage(this.ws, m);
  }

  private requireReplica(): Replica {
    if (!this.replica) throw new ProtocolError(`message before 'assign' (state ${this.state})`);
    return this.replica;
  }

  end(exitCode: number): void {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.stopRequested = true;
    void this.ring.close();
    this.ws?.close(1000);
    this.resolveDone(exitCode);
  }
}

function readSettings(config: Record<string, unknown>): RunSettings {
  const { checkEvery, reportEvery, ...train } = config;
  const int = (v: unknown, d: number) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : d);
  return { train: validateTrainConfig(train), checkEvery: int(checkEvery, 0), reportEvery: Math.max(1, int(reportEvery, 10)) };
}

export async function startWorker(cfg: WorkerConfig): Promise<WorkerHandle> {
  const backend = await selectBackend(cfg.backend, cfg.log);
  const data = cfg.dataDir ? await loadMnist(cfg.dataDir) : undefined;
  if (data) cfg.log.info({ source: data.source, train: data.train.count }, 'local dataset loaded');
  const ring = new RingTransport({
    host: cfg.listenHost, port: cfg.listenPort, maxPayloadBytes: cfg.maxPayloadBytes, connectTimeoutMs: cfg.ringConnectTimeoutMs, log: cfg.log,
  });
  const port = await ring.listen();
  const session = new WorkerSession(cfg, backend, data, ring, port);
  session.connect();
  cfg.log.info({ coordinator: cfg.coordinator, ringPort: port }, 'worker started');
  return { port, done: session.done, close: async () => { session.end(130); await ring.close(); } };
}
