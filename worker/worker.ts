/**
 * A worker: joins the coordinator, gets a rank and ring neighbours, receives the replica state and its shard of each
 * epoch, and trains step by step with a ring allreduce over direct links to its neighbours.
 *
 * Session phases (WORKER_PHASES, one transition function): connecting -> joined (welcome) -> forming (ring links) ->
 * ready -> synced (replica state) -> training <-> idle -> stopped. Each control message is accepted only in the
 * phases ACCEPTS lists. A new `assign` (membership change) abandons the step in flight; the replica keeps every step
 * it applied, and the coordinator restores all replicas from the most advanced one. A lost coordinator is retried
 * with backoff for a bounded time. The session talks to the coordinator through a ControlLink only.
 */
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import { dialAuthenticated } from '../shared/admission.js';
import { WebSocketControlLink, type ControlLink, type LinkClosed } from '../shared/control-link.js';
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
import { PhaseMachine } from '../shared/phases.js';
import { ACCEPTS, WORKER_PHASES, type WorkerPhase } from './phases.js';
import {
  bytesToFloat32,
  bytesToUint32,
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
import { Replica, replicaOptions } from '../shared/train/replica.js';
import { keepAlive } from '../shared/ws-util.js';
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
  stepGraph?: 'auto' | 'off';
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

/** Where a replica stands: its epoch, the samples of that epoch's order it consumed, global steps applied. */
type ReplicaPosition = { epoch: number; consumed: number; step: number };

interface RunSettings {
  train: TrainConfig;
  checkEvery: number;
  reportEvery: number;
  nonFinite: NonFinitePolicy;
  compression: Compression;
  /** The model's topology (model JSON) from the coordinator. */
  modelTopology?: string;
}

/** Exported for the unit tests, which drive it over an in-memory ControlLink (attachControl) with no coordinator. */
export class WorkerSession {
  private readonly phase = new PhaseMachine<WorkerPhase>('worker', 'connecting', WORKER_PHASES);
  private readonly id = randomUUID();
  private gen = 0;
  private rank = -1;
  private worldSize = 0;
  private settings?: RunSettings;
  private replica?: Replica;
  private hasState = false;
  private position: ReplicaPosition = { epoch: 0, consumed: 0, step: 0 };
  /** The history this replica's state belongs to (given with `start`; see coordinator/restore.ts). */
  private lineage = '';
  private link?: ControlLink;
  private lostSince?: number;
  /** Step records not yet reported, with the generation and rank they were trained under. */
  private pending: { gen: number; rank: number; records: StepRecord[] } = { gen: 0, rank: 0, records: [] };
  private boundaryTasks: Array<() => Promise<void>> = [];
  private loop: Promise<void> = Promise.resolve();
  private training = false;
  private stopped = false;
  private heartbeat?: NodeJS.Timeout;
  private resolveDone!: (code: number) => void;
  readonly done = new Promise<number>((resolve) => {
    this.resolveDone = resolve;
  });
  /** The run's logger (runId), and the current membership's (gen, rank), each a child of the configured one. */
  private runLog: Logger;
  private log: Logger;
  private readonly dataInfo?: DatasetInfo;

  constructor(
    private readonly cfg: WorkerConfig,
    private readonly backend: string,
    private readonly data: Dataset | undefined,
    private readonly ring: RingTransport,
    private readonly ringPort: number,
  ) {
    this.runLog = cfg.log;
    this.log = cfg.log;
    this.dataInfo = data && describeDataset(data);
    ring.onPeerLost((err) =>
      this.log.warn(
        { err: err.message, code: err.code },
        'ring link lost; waiting for the coordinator to re-form the ring',
      ),
    );
    ring.onLinkDown((d) =>
      this.send({ type: 'ringLinkDown', gen: Math.max(1, this.gen), rank: Math.max(0, this.rank), ...d }),
    );
    ring.onStall((s) => {
      this.log.warn({ ...s }, 'step is waiting on the ring predecessor');
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
      this.attachControl(new WebSocketControlLink(ws, this.cfg.log), () =>
        keepAlive(ws, this.cfg.heartbeatMs, this.cfg.heartbeatMisses, () =>
          this.log.warn('coordinator stopped answering pings'),
        ),
      );
    } catch (err) {
      if (err instanceof AuthError) {
        this.log.error({ err: err.message, code: err.code }, 'the coordinator refused this worker');
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

  /** Talk to the coordinator over `link` (`watch` starts the transport's own liveness checks, if it has any). */
  attachControl(link: ControlLink, watch?: () => void): void {
    this.link = link;
    this.lostSince = undefined;
    link.messages((m) => this.onControl(m));
    void link.closed.then((closed) => this.onCoordinatorClosed(link, closed));
    watch?.();
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(
      () => this.send({ type: 'heartbeat', gen: this.gen, rank: this.rank, step: this.position.step }),
      this.cfg.heartbeatMs,
    );
    this.heartbeat.unref();
  }

  private onControl(message: Message): void {
    if ('gen' in message && message.gen < this.gen) return; // fenced: an older membership's message
    try {
      this.onMessage(message);
    } catch (err) {
      this.fail(err);
    }
  }

  private onMessage(m: Message): void {
    const accepted = (ACCEPTS as Partial<Record<Message['type'], readonly WorkerPhase[]>>)[m.type];
    if (!accepted) throw new ProtocolError(`'${m.type}' is not a coordinator message`);
    if (!accepted.includes(this.phase.phase))
      throw new ProtocolError(`'${m.type}' is not expected in phase '${this.phase.phase}'`);
    switch (m.type) {
      case 'welcome':
        return this.onWelcome(m);
      case 'assign':
        return void this.onAssign(m).catch((err: unknown) => this.onRingSetupError(err, m.gen));
      case 'requestWeights':
        return this.atBoundary(() => this.onRequestWeights(m));
      case 'start':
        return this.onStart(m);
      case 'shard':
        return this.onShard(m);
      case 'stop':
        return this.onStop(m);
      default:
        throw new ProtocolError(`'${m.type}' is not a coordinator message`);
    }
  }

  private onWelcome(m: MessageOf<'welcome'>): void {
    this.phase.to('joined');
    this.gen = 0; // a (possibly restarted) coordinator numbers its generations afresh
    this.pending = { gen: 0, rank: 0, records: [] }; // the old numbering means nothing to it
    this.runLog = this.cfg.log.child({ runId: m.runId });
    this.log = this.runLog;
    this.log.info({ coordinator: this.cfg.coordinator }, 'joined the run');
  }

  /** A new membership: abandon the step in flight, set up the new ring, report how far this replica got. */
  private async onAssign(m: MessageOf<'assign'>): Promise<void> {
    this.phase.to('forming');
    this.gen = m.gen;
    this.rank = m.rank;
    this.worldSize = m.worldSize;
    this.settings = readSettings(m.config, m.modelTopology);
    this.log = this.runLog.child({ gen: m.gen, rank: m.rank });
    this.ring.abandon('membership changed');
    await this.loop;
    const options = replicaOptions(this.cfg.stepGraph, this.runLog);
    this.replica ??= await buildWorkerReplica(this.settings.train, this.settings.modelTopology, this.backend, options);
    await this.ring.connect({
      gen: m.gen,
      rank: m.rank,
      worldSize: m.worldSize,
      successor: m.successor,
      predecessorRank: m.predecessorRank,
    });
    if (m.gen !== this.gen || this.stopped) return;
    this.phase.to('ready');
    this.flushRecords();
    const p = this.position;
    this.log.info({ worldSize: m.worldSize, ...p, hasState: this.hasState }, 'ring links up');
    this.send({
      type: 'ready',
      gen: m.gen,
      rank: m.rank,
      ...p,
      hasState: this.hasState,
      lineage: this.hasState ? this.lineage : '',
    });
  }

  /** A neighbour that vanished while the ring formed: the coordinator sees it too and re-forms; wait for that. */
  private onRingSetupError(err: unknown, gen: number): void {
    if (this.stopped || gen !== this.gen) return; // superseded by a newer assignment
    if (err instanceof PeerLostError || err instanceof StepAbortedError) {
      this.log.warn(
        { err: (err as Error).message, code: (err as RingtrainError).code },
        'ring setup failed; waiting for the coordinator to re-form the ring',
      );
      if (this.phase.is('forming')) this.phase.to('idle');
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
      step: this.position.step,
      weights: float32ToBytes(weights),
      optimizer: float32ToBytes(optimizer),
    });
  }

  /** The replica state every member starts from; queued before the shards that follow it. */
  private onStart(m: MessageOf<'start'>): void {
    this.phase.to('synced');
    this.loop = this.loop.then(() => this.applyStart(m)).catch((err: unknown) => this.fail(err));
  }

  private async applyStart(m: MessageOf<'start'>): Promise<void> {
    if (m.gen !== this.gen || this.stopped) return;
    const replica = this.requireReplica();
    replica.setWeights(bytesToFloat32(m.weights));
    await replica.setOptimizerState(bytesToFloat32(m.optimizer));
    this.position = { epoch: m.epoch, consumed: m.consumed, step: m.step };
    this.lineage = m.lineage;
    this.hasState = true;
    this.log.info({ ...this.position }, 'replica state received');
  }

  private onShard(m: MessageOf<'shard'>): void {
    const previous = this.loop;
    this.loop = previous.then(() => this.trainShard(m)).catch((err: unknown) => this.onShardError(err, m.gen));
  }

  private async trainShard(m: MessageOf<'shard'>): Promise<void> {
    if (m.gen !== this.gen || this.stopped) return;
    const settings = this.settings!;
    const replica = this.requireReplica();
    const test = this.testRange(m);
    const t = settings.train;
    const plan = this.shardPlan(m, settings);
    this.phase.to('training');
    this.training = true;
    let sentBefore = this.ring.sentBytes;
    const worldSize = this.worldSize;
    const trainedIn = { gen: m.gen, rank: this.rank };
    const consumedAfter = (k: number) => Math.min(m.epochSamples, m.offset + k * t.batchSize * worldSize);
    try {
      const result = await runShard(
        replica,
        plan,
        { rank: this.rank, worldSize: this.worldSize, gen: m.gen, links: this.ring, compression: settings.compression },
        {
          onStep: (r) => {
            r.sentBytes = this.ring.sentBytes - sentBefore;
            sentBefore = this.ring.sentBytes;
            this.position = { epoch: m.epoch, consumed: consumedAfter(r.step + 1 - m.firstStep), step: r.step + 1 };
            this.record(r, settings.reportEvery, trainedIn);
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
      if (this.phase.is('training')) this.phase.to('idle');
    }
  }

  private shardPlan(m: MessageOf<'shard'>, settings: RunSettings): ShardPlan {
    const { split, order, ids } = this.trainData(m);
    const t = settings.train;
    const augment = augmenterFor(t, split, m.epoch, ids);
    return {
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
  }

  /** A step abandoned because the ring changed is expected; anything else ends the worker. */
  private onShardError(err: unknown, gen: number): void {
    if (this.stopped) return;
    if (err instanceof StepAbortedError || err instanceof PeerLostError || gen !== this.gen) {
      this.log.info(
        { err: (err as Error).message, step: this.position.step },
        'step abandoned; waiting for the new ring',
      );
      if (this.phase.is('training')) this.phase.to('idle');
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

  private record(r: StepRecord, reportEvery: number, trainedIn: { gen: number; rank: number }): void {
    if (r.nonFinite)
      this.log.warn({ step: r.step }, 'non-finite averaged gradients; every replica skipped this update');
    if (this.pending.gen !== trainedIn.gen || this.pending.rank !== trainedIn.rank) {
      this.flushRecords();
      this.pending = { ...trainedIn, records: [] };
    }
    this.pending.records.push(r);
    if (this.pending.records.length >= reportEvery) this.flushRecords();
  }

  /** Records travel under the generation they were trained in: the coordinator keeps a replaced one's late report. */
  private flushRecords(): void {
    const { gen, rank, records } = this.pending;
    if (records.length > 0 && gen > 0) this.send({ type: 'metrics', gen, rank, records });
    this.pending = { gen, rank, records: [] };
  }

  private onStop(m: MessageOf<'stop'>): void {
    this.log.info({ reason: m.reason, exitCode: m.exitCode }, 'stop from the coordinator');
    this.end(m.exitCode);
  }

  private onCoordinatorClosed(link: ControlLink, { code, reason }: LinkClosed): void {
    if (this.stopped || link !== this.link) return;
    this.link = undefined;
    if (code === CLOSE_CODES.policyViolation || code === CLOSE_CODES.ringUnreachable) {
      this.log.error({ code, reason }, 'the coordinator refused this worker');
      return this.end(1);
    }
    if (code === CLOSE_CODES.runEnded) {
      this.log.info({ code, reason }, 'the run ended while this worker was away');
      return this.end(0);
    }
    this.log.warn({ code, reason }, 'lost the coordinator; reconnecting');
    this.ring.abandon('coordinator lost');
    this.phase.to('connecting');
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
    this.link?.send(m);
  }

  private requireReplica(): Replica {
    if (!this.replica) throw new ProtocolError(`message before 'assign' (phase ${this.phase.phase})`);
    return this.replica;
  }

  end(exitCode: number): void {
    if (this.stopped) return;
    this.stopped = true;
    this.phase.to('stopped');
    clearInterval(this.heartbeat);
    void this.ring.close();
    this.link?.close(CLOSE_CODES.normal);
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
