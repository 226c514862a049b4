/**
 * A worker: joins the coordinator, gets a rank and ring neighbours, receives the replica state and its shard of each
 * epoch, and trains step by step with a ring allreduce over direct links to its neighbours.
 *
 * Session states: connecting -> joined (welcome) -> assigned (ring forming) -> ready -> training <-> waiting ->
 * stopped. A new `assign` (membership change) abandons the step in flight; the replica keeps every step it
 * applied, and the coordinator restores all replicas from the most advanced one. A lost coordinator is retried with
 * backoff for a bounded time; control messages are handled in `onMessage`, one small handler per type.
 */
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import type WebSocket from 'ws';
import { dialAuthenticated } from '../shared/admission.js';
import type { Compression } from '../shared/ring/allreduce.js';
import { validateRunConfig, type TrainConfig } from '../shared/config.js';
import { makeSplit, type DataSplit, type Dataset, type SampleShape } from '../shared/data/dataset.js';
import { createAugmenter, parseAugment, type BatchAugmenter } from '../shared/data/augment.js';
import { describeDataset } from '../shared/data/info.js';
import { loadDataset, type DataOptions } from '../shared/data/load.js';
import {
  AuthError,
  CLOSE_CODES,
  PeerLostError,
  ProtocolError,
  RingtrainError,
  StepAbortedError,
} from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import {
  bytesToFloat32,
  bytesToUint32,
  decodeFrame,
  float32ToBytes,
  PROTOCOL_VERSION,
  type DatasetInfo,
  type Message,
  type MessageOf,
  type StepRecord,
} from '../shared/wire/protocol.js';
import { selectBackend, type BackendChoice } from '../shared/tf/backend.js';
import { evaluateRangeYielding } from '../shared/train/batches.js';
import { buildWorkerReplica } from '../shared/train/run-model.js';
import { Replica } from '../shared/train/replica.js';
import { keepAlive, rawToBytes, sendMessage } from '../shared/ws-util.js';
import { runShard, type NonFinitePolicy, type ShardPlan } from './epoch-runner.js';
import { RingTransport } from './ring-transport.js';

export interface WorkerConfig {
  coordinator: string;
  token: string;
  /** Ring listener address. */
  listenHost: string;
  listenPort: number;
  /** Address peers dial to reach this worker's ring listener (default: this machine's hostname). */
  advertise?: string;
  backend: BackendChoice;
  /** TensorFlow threads (`--threads`); undefined = the backend's default. */
  threads?: number;
  dataDir?: string;
  /** How --data-dir is read (image size, colour mode, validation split); must match the coordinator's. */
  dataOptions?: DataOptions;
  maxPayloadBytes: number;
  ringConnectTimeoutMs: number;
  heartbeatMs: number;
  heartbeatMisses: number;
  stallWarnMs: number;
  /** Keep retrying a lost coordinator for this long before giving up. */
  coordinatorRetryMs: number;
  /** Trust this CA for a wss:// coordinator (PEM). */
  tlsCa?: string;
  /** Serve the ring listener over TLS with this certificate and key (PEM); successors are then dialed over wss://. */
  tlsCert?: string;
  tlsKey?: string;
  /** Testing only: sleep this long before every step, to make this worker the one the others wait for. */
  debugDelayMs?: number;
  log: Logger;
}

export const WORKER_DEFAULTS = {
  listenHost: '0.0.0.0',
  listenPort: 0,
  maxPayloadBytes: 256 * 1024 * 1024,
  ringConnectTimeoutMs: 30_000,
  heartbeatMs: 1_000,
  heartbeatMisses: 5,
  stallWarnMs: 10_000,
  coordinatorRetryMs: 120_000,
};

export interface WorkerHandle {
  /** The ring listener's port. */
  port: number;
  /** Resolves with the exit code the process should end with. */
  done: Promise<number>;
  close(): Promise<void>;
}

type SessionState = 'connecting' | 'joined' | 'assigned' | 'ready' | 'training' | 'waiting' | 'stopped';

interface RunSettings {
  train: TrainConfig;
  checkEvery: number;
  reportEvery: number;
  nonFinite: NonFinitePolicy;
  compression: Compression;
  /** The model's topology (model JSON) from the coordinator. */
  modelTopology?: string;
}

class WorkerSession {
  private state: SessionState = 'connecting';
  private readonly id = randomUUID();
  private gen = 0;
  private rank = -1;
  private worldSize = 0;
  private settings?: RunSettings;
  private replica?: Replica;
  private hasState = false;
  private stepsDone = 0;
  private ws?: WebSocket;
  private lostSince?: number;
  private pendingRecords: StepRecord[] = [];
  private boundaryTasks: Array<() => Promise<void>> = [];
  private loop: Promise<void> = Promise.resolve();
  private training = false;
  private stopped = false;
  private heartbeat?: NodeJS.Timeout;
  private resolveDone!: (code: number) => void;
  readonly done = new Promise<number>((resolve) => {
    this.resolveDone = resolve;
  });
  private log: Logger;
  private readonly dataInfo?: DatasetInfo;

  constructor(
    private readonly cfg: WorkerConfig,
    private readonly backend: string,
    private readonly data: Dataset | undefined,
    private readonly ring: RingTransport,
    private readonly ringPort: number,
  ) {
    this.log = cfg.log;
    this.dataInfo = data && describeDataset(data);
    ring.onPeerLost((err) =>
      this.log.warn(
        { err: err.message, gen: this.gen },
        'ring link lost; waiting for the coordinator to re-form the ring',
      ),
    );
    ring.onLinkDown((d) =>
      this.send({ type: 'ringLinkDown', gen: Math.max(1, this.gen), rank: Math.max(0, this.rank), ...d }),
    );
    ring.onStall((s) => {
      this.log.warn({ ...s, gen: this.gen }, 'step is waiting on the ring predecessor');
      this.send({
        type: 'stall',
        gen: Math.max(1, this.gen),
        rank: Math.max(0, this.rank),
        ...s,
        peerRank: Math.max(0, s.peerRank),
      });
    });
  }

  /** Dial the coordinator and answer its challenge; on failure retry with backoff until the retry budget is spent. */
  async connect(attempt = 0): Promise<void> {
    if (this.stopped) return;
    try {
      const ws = await dialAuthenticated(this.cfg.coordinator, {
        token: this.cfg.token,
        context: 'control',
        timeoutMs: 10_000,
        ws: { maxPayload: this.cfg.maxPayloadBytes, ...(this.cfg.tlsCa ? { ca: this.cfg.tlsCa } : {}) },
        answer: (auth) => ({
          type: 'hello',
          protocolVersion: PROTOCOL_VERSION,
          workerId: this.id,
          host: os.hostname(),
          ringHost: this.cfg.advertise ?? os.hostname(),
          ringPort: this.ringPort,
          hasData: this.data !== undefined,
          ...(this.dataInfo ? { dataset: this.dataInfo } : {}),
          backend: this.backend,
          auth,
        }),
      });
      this.attachControl(ws);
    } catch (err) {
      if (err instanceof AuthError) {
        this.log.error({ err: err.message }, 'the coordinator refused this worker');
        return this.end(1);
      }
      this.retryLater(attempt, err);
    }
  }

  private retryLater(attempt: number, err: unknown): void {
    this.lostSince ??= Date.now();
    if (Date.now() - this.lostSince > this.cfg.coordinatorRetryMs) {
      this.log.error(
        { err: (err as Error)?.message, retryMs: this.cfg.coordinatorRetryMs },
        'coordinator unreachable; giving up',
      );
      return this.end(1);
    }
    const delay = Math.min(5_000, 200 * 2 ** attempt);
    this.log.info({ attempt, delay, err: (err as Error)?.message }, 'coordinator unreachable; retrying');
    setTimeout(() => void this.connect(attempt + 1), delay);
  }

  private attachControl(ws: WebSocket): void {
    this.ws = ws;
    this.lostSince = undefined;
    ws.on('message', (data) => this.onRaw(rawToBytes(data)));
    ws.on('close', (code, reason) => this.onCoordinatorClosed(code, reason.toString()));
    ws.on('error', (err) => this.log.debug({ err }, 'coordinator link error'));
    keepAlive(ws, this.cfg.heartbeatMs, this.cfg.heartbeatMisses, () =>
      this.log.warn('coordinator stopped answering pings'),
    );
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(
      () => this.send({ type: 'heartbeat', gen: this.gen, rank: this.rank, step: this.stepsDone }),
      this.cfg.heartbeatMs,
    );
    this.heartbeat.unref();
  }

  private onRaw(bytes: Uint8Array): void {
    let message: Message;
    try {
      const frame = decodeFrame(bytes);
      if (frame.kind !== 'control') throw new ProtocolError('gradient chunk on the control link');
      message = frame.message;
    } catch (err) {
      this.log.error({ err }, 'bad message from the coordinator; dropping the link');
      this.ws?.close(CLOSE_CODES.protocolError, 'bad message');
      return;
    }
    if ('gen' in message && message.gen < this.gen) return; // fenced: an older membership's message
    try {
      this.onMessage(message);
    } catch (err) {
      this.fail(err);
    }
  }

  private onMessage(m: Message): void {
    const guard = (p: Promise<void>) => void p.catch((err: unknown) => this.fail(err));
    switch (m.type) {
      case 'welcome':
        return this.onWelcome(m);
      case 'assign':
        return void this.onAssign(m).catch((err: unknown) => this.onRingSetupError(err, m.gen));
      case 'requestWeights':
        return this.atBoundary(() => this.onRequestWeights(m));
      case 'start':
        return guard(this.onStart(m));
      case 'shard':
        return this.onShard(m);
      case 'stop':
        return this.onStop(m);
      default:
        throw new ProtocolError(`'${m.type}' is not a coordinator message`);
    }
  }

  private onWelcome(m: MessageOf<'welcome'>): void {
    this.state = 'joined';
    this.gen = 0; // a (possibly restarted) coordinator numbers its generations afresh
    this.log = this.cfg.log.child({ runId: m.runId });
    this.log.info({ coordinator: this.cfg.coordinator }, 'joined the run');
  }

  /** A new membership: abandon the step in flight, set up the new ring, report how far this replica got. */
  private async onAssign(m: MessageOf<'assign'>): Promise<void> {
    this.state = 'assigned';
    this.gen = m.gen;
    this.rank = m.rank;
    this.worldSize = m.worldSize;
    this.settings = readSettings(m.config, m.modelTopology);
    this.log = this.log.child({ gen: m.gen, rank: m.rank });
    this.ring.abandon('membership changed');
    await this.loop;
    this.replica ??= await buildWorkerReplica(this.settings.train, this.settings.modelTopology, this.backend);
    await this.ring.connect({
      gen: m.gen,
      rank: m.rank,
      worldSize: m.worldSize,
      successor: m.successor,
      predecessorRank: m.predecessorRank,
    });
    if (m.gen !== this.gen) return;
    this.state = 'ready';
    this.flushRecords();
    this.log.info({ worldSize: m.worldSize, step: this.stepsDone, hasState: this.hasState }, 'ring links up');
    this.send({ type: 'ready', gen: m.gen, rank: m.rank, step: this.stepsDone, hasState: this.hasState });
  }

  /** A neighbour that vanished while the ring formed: the coordinator sees it too and re-forms; wait for that. */
  private onRingSetupError(err: unknown, gen: number): void {
    if (this.stopped || gen !== this.gen) return; // superseded by a newer assignment
    if (err instanceof PeerLostError || err instanceof StepAbortedError) {
      this.log.warn(
        { err: (err as Error).message, gen },
        'ring setup failed; waiting for the coordinator to re-form the ring',
      );
      this.state = 'waiting';
      return;
    }
    this.fail(err);
  }

  private async onRequestWeights(m: MessageOf<'requestWeights'>): Promise<void> {
    const replica = this.requireReplica();
    const weights = replica.getWeights();
    const optimizer = await replica.getOptimizerState();
    this.send({
      type: 'weights',
      gen: m.gen,
      rank: this.rank,
      step: this.stepsDone,
      weights: float32ToBytes(weights),
      optimizer: float32ToBytes(optimizer),
    });
  }

  private async onStart(m: MessageOf<'start'>): Promise<void> {
    const replica = this.requireReplica();
    replica.setWeights(bytesToFloat32(m.weights));
    await replica.setOptimizerState(bytesToFloat32(m.optimizer));
    this.stepsDone = m.step;
    this.hasState = true;
    this.state = 'waiting';
    this.log.info({ epoch: m.epoch, step: m.step }, 'replica state received');
  }

  private onShard(m: MessageOf<'shard'>): void {
    const previous = this.loop;
    this.loop = previous.then(() => this.trainShard(m)).catch((err: unknown) => this.onShardError(err, m.gen));
  }

  private async trainShard(m: MessageOf<'shard'>): Promise<void> {
    if (m.gen !== this.gen || this.stopped) return;
    const settings = this.settings!;
    const replica = this.requireReplica();
    const { split, order, ids } = this.trainData(m);
    const test = this.testRange(m);
    const t = settings.train;
    const augment = augmenterFor(t, split, m.epoch, ids);
    const plan: ShardPlan = {
      epoch: m.epoch,
      order,
      split,
      batchSize: t.batchSize,
      augment,
      firstStep: m.firstStep,
      epochSamples: m.epochSamples,
      offset: m.offset,
      checkEvery: settings.checkEvery,
      nonFinite: settings.nonFinite,
      debugDelayMs: this.cfg.debugDelayMs ?? 0,
      schedule: { baseLr: t.lr, decay: t.lrDecay, scaleByWorldSize: t.scaleLr, warmupEpochs: t.warmupEpochs },
    };
    this.state = 'training';
    this.training = true;
    try {
      const result = await runShard(
        replica,
        plan,
        { rank: this.rank, worldSize: this.worldSize, gen: m.gen, links: this.ring, compression: settings.compression },
        {
          onStep: (r) => {
            this.stepsDone = r.step + 1;
            this.record(r, settings.reportEvery);
          },
          shouldStop: () => this.stopped || m.gen !== this.gen,
          atBoundary: () => this.runBoundaryTasks(),
        },
      );
      this.flushRecords();
      const counts = await evaluateRangeYielding(replica, test.split, test.start, test.end);
      this.send({ type: 'evalResult', gen: m.gen, rank: this.rank, epoch: m.epoch, ...counts });
      this.send({
        type: 'epochDone',
        gen: m.gen,
        rank: this.rank,
        epoch: m.epoch,
        steps: result.steps,
        trainMs: result.trainMs,
      });
    } finally {
      this.training = false;
      await this.runBoundaryTasks();
      if (this.state === 'training') this.state = 'waiting';
    }
  }

  /** A step abandoned because the ring changed is expected; anything else ends the worker. */
  private onShardError(err: unknown, gen: number): void {
    if (this.stopped) return;
    if (err instanceof StepAbortedError || err instanceof PeerLostError || gen !== this.gen) {
      this.log.info({ err: (err as Error).message, step: this.stepsDone }, 'step abandoned; waiting for the new ring');
      this.state = 'waiting';
      return;
    }
    this.fail(err);
  }

  /** Run `task` between two steps (now, if no shard is training). */
  private atBoundary(task: () => Promise<void>): void {
    const guarded = () => task().catch((err: unknown) => this.fail(err));
    if (this.training) this.boundaryTasks.push(guarded);
    else void guarded();
  }

  private async runBoundaryTasks(): Promise<void> {
    while (this.boundaryTasks.length > 0) await this.boundaryTasks.shift()!();
  }

  /** Shipped samples (worker without data) are trained in shipped order; local data is indexed. */
  private trainData(m: MessageOf<'shard'>): { split: DataSplit; order: Uint32Array; ids?: Uint32Array } {
    if (m.images && m.labels) {
      const split = makeSplit(m.images, m.labels, shippedShape(m));
      // Shipped samples are the shard's, in order: position i is training-set sample indices[i] (augmentation ids).
      return { split, order: Uint32Array.from({ length: split.count }, (_, i) => i), ids: bytesToUint32(m.indices) };
    }
    if (!this.data) throw new ProtocolError('shard without samples for a worker without data');
    return { split: this.data.train, order: bytesToUint32(m.indices) };
  }

  private testRange(m: MessageOf<'shard'>): { split: DataSplit; start: number; end: number } {
    if (m.testImages && m.testLabels) {
      const split = makeSplit(m.testImages, m.testLabels, shippedShape(m));
      return { split, start: 0, end: split.count };
    }
    if (!this.data) throw new ProtocolError('no evaluation samples for a worker without data');
    return { split: this.data.test, start: m.testStart, end: m.testEnd };
  }

  private record(r: StepRecord, reportEvery: number): void {
    if (r.nonFinite)
      this.log.warn({ step: r.step }, 'non-finite averaged gradients; every replica skipped this update');
    this.pendingRecords.push(r);
    if (this.pendingRecords.length >= reportEvery) this.flushRecords();
  }

  private flushRecords(): void {
    if (this.pendingRecords.length === 0 || this.gen === 0) return;
    this.send({ type: 'metrics', gen: this.gen, rank: this.rank, records: this.pendingRecords });
    this.pendingRecords = [];
  }

  private onStop(m: MessageOf<'stop'>): void {
    this.log.info({ reason: m.reason, exitCode: m.exitCode }, 'stop from the coordinator');
    this.end(m.exitCode);
  }

  private onCoordinatorClosed(code: number, reason: string): void {
    if (this.stopped) return;
    this.ws = undefined;
    if (code === CLOSE_CODES.policyViolation || code === CLOSE_CODES.ringUnreachable) {
      this.log.error({ code, reason }, 'the coordinator refused this worker');
      return this.end(1);
    }
    this.log.warn({ code, reason }, 'lost the coordinator; reconnecting');
    this.ring.abandon('coordinator lost');
    this.state = 'connecting';
    this.retryLater(0, new PeerLostError('coordinator'));
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    const code = err instanceof RingtrainError ? err.code : 'INTERNAL';
    this.log.error({ err, code }, 'worker failed');
    this.send({
      type: 'failed',
      gen: Math.max(1, this.gen),
      rank: Math.max(0, this.rank),
      code,
      message: String((err as Error)?.message ?? err),
    });
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
    if (this.stopped) return;
    this.stopped = true;
    this.state = 'stopped';
    clearInterval(this.heartbeat);
    void this.ring.close();
    this.ws?.close(1000);
    this.resolveDone(exitCode);
  }
}

/** The epoch's training augmentation (--augment), keyed by training-set sample ids. */
function augmenterFor(t: TrainConfig, split: DataSplit, epoch: number, ids?: Uint32Array): BatchAugmenter | undefined {
  return createAugmenter({ names: parseAugment(t.augment), shape: split.shape, seed: t.seed, epoch, ids });
}

/** The decoder guarantees sampleShape whenever a shard ships images. */
function shippedShape(m: MessageOf<'shard'>): SampleShape {
  if (!m.sampleShape) throw new ProtocolError('shard ships samples without their sampleShape');
  return [m.sampleShape.height, m.sampleShape.width, m.sampleShape.channels];
}

/** The same validator as the command line: a bad or unknown field fails the worker with a ConfigError naming it. */
function readSettings(config: Record<string, unknown>, modelTopology: string | undefined): RunSettings {
  const { checkEvery, reportEvery, nonFinite, compression, ...train } = validateRunConfig(config, 'assign.config');
  return { train, checkEvery, reportEvery, nonFinite, compression, ...(modelTopology ? { modelTopology } : {}) };
}

export async function startWorker(cfg: WorkerConfig): Promise<WorkerHandle> {
  const backend = await selectBackend(cfg.backend, cfg.log, { threads: cfg.threads });
  const data = cfg.dataDir ? await loadDataset(cfg.dataDir, cfg.dataOptions) : undefined;
  if (data) {
    const { source, format, shape } = data;
    cfg.log.info({ source, format, shape, train: data.train.count, test: data.test.count }, 'local dataset loaded');
  }
  const ring = new RingTransport({
    host: cfg.listenHost,
    port: cfg.listenPort,
    token: cfg.token,
    maxPayloadBytes: cfg.maxPayloadBytes,
    connectTimeoutMs: cfg.ringConnectTimeoutMs,
    heartbeatMs: cfg.heartbeatMs,
    heartbeatMisses: cfg.heartbeatMisses,
    stallWarnMs: cfg.stallWarnMs,
    ...(cfg.tlsCert && cfg.tlsKey ? { tls: { cert: cfg.tlsCert, key: cfg.tlsKey, ca: cfg.tlsCa } } : {}),
    log: cfg.log,
  });
  const port = await ring.listen();
  const session = new WorkerSession(cfg, backend, data, ring, port);
  void session.connect();
  cfg.log.info({ coordinator: cfg.coordinator, ringPort: port }, 'worker started');
  return {
    port,
    done: session.done,
    close: async () => {
      session.end(130);
      await ring.close();
    },
  };
}
