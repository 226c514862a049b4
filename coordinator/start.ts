/**
 * Starting a coordinator: load the dataset (or a checkpoint to resume), open the control port (HTTP or HTTPS, with
 * WebSocket upgrade), admit workers through the token handshake, and hand them to the Coordinator.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Admission, ADMISSION_DEFAULTS } from '../shared/admission.js';
import { validateTrainConfig, type TrainConfig } from '../shared/config.js';
import { limitDataset, type Dataset } from '../shared/data/dataset.js';
import { describeDataset } from '../shared/data/info.js';
import { loadDataset, type DataOptions } from '../shared/data/load.js';
import type { DatasetInfo } from '../shared/wire/protocol.js';
import { CLOSE_CODES, ConfigError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { ProgressView } from '../shared/cli/progress.js';
import { prepareRunModel } from '../shared/train/run-model.js';
import { CheckpointStore } from './checkpoints.js';
import { Coordinator, type ClusterSummary, type CoordinatorOptions, type ResumeState } from './coordinator.js';
import type { EpochOutcome } from './run-state.js';
import type { RunObserver } from './events.js';

export type { ClusterSummary } from './coordinator.js';

export interface CoordinatorConfig extends CoordinatorOptions {
  host: string;
  port: number;
  train: TrainConfig;
  dataDir?: string;
  /** How --data-dir is read (image size, colour mode, validation split). */
  dataOptions?: DataOptions;
  runDir: string;
  summaryJson?: string;
  /** The cluster secret every worker proves it knows. */
  token: string;
  /** Continue from the newest valid checkpoint in runDir/checkpoints. */
  resume: boolean;
  checkpointKeep: number;
  maxPayloadBytes: number;
  authTimeoutMs: number;
  maxPendingAuth: number;
  tls?: { cert: string; key: string };
  log: Logger;
  progress: ProgressView;
  observers?: RunObserver[];
}

export const COORDINATOR_DEFAULTS = {
  host: '0.0.0.0',
  port: 29500,
  minWorkers: 1,
  maxWorkers: 0,
  rendezvousTimeoutMs: 300_000,
  maxPayloadBytes: 64 * 1024 * 1024,
  checkEvery: 100,
  reportEvery: 10,
  heartbeatMs: 1_000,
  heartbeatMisses: 5,
  stallAbortMs: 60_000,
  ringFormTimeoutMs: 60_000,
  checkpointEvery: 0,
  checkpointKeep: 3,
  nonFinite: 'skip' as const,
  compression: 'none' as const,
  authTimeoutMs: ADMISSION_DEFAULTS.authTimeoutMs,
  maxPendingAuth: ADMISSION_DEFAULTS.maxPending,
  resume: false,
};

export interface CoordinatorHandle {
  port: number;
  runId: string;
  /** Resolves when the run ends (finished, failed or closed). */
  done: Promise<ClusterSummary>;
  close(reason?: string): Promise<ClusterSummary>;
}

/** The run's dataset (limited) and the description of the full one, which workers' own copies must match. */
async function loadRunData(
  train: TrainConfig,
  cfg: CoordinatorConfig,
): Promise<{ data: Dataset; dataInfo: DatasetInfo }> {
  const full = await loadDataset(cfg.dataDir, cfg.dataOptions);
  const data = limitDataset(full, train.trainLimit, train.testLimit);
  const { source, format, shape, classNames } = data;
  cfg.log.info({ source, format, shape, classNames, train: data.train.count, test: data.test.count }, 'dataset loaded');
  return { data, dataInfo: describeDataset(full) };
}

/** The newest valid checkpoint, its training config, and where to continue. */
async function loadResume(store: CheckpointStore, log: Logger): Promise<{ resume: ResumeState; train: TrainConfig }> {
  const { checkpoint, skipped } = await store.loadLatest();
  for (const s of skipped) log.error({ file: s.file, problem: s.error.message }, 'skipped a corrupt checkpoint');
  if (!checkpoint) throw new ConfigError(`--resume: no valid checkpoint in ${store.dir}`);
  const m = checkpoint.meta;
  const extra = (m.extra ?? {}) as { history?: EpochOutcome[]; totalSamples?: number };
  log.info({ file: checkpoint.file, step: m.step, epoch: m.epoch, consumed: m.consumed }, 'resuming from checkpoint');
  return {
    train: validateTrainConfig(m.config as Partial<TrainConfig>),
    resume: {
      runId: m.runId,
      position: { epoch: m.epoch, consumed: m.consumed, step: m.step },
      weights: checkpoint.weights,
      optimizer: checkpoint.optimizer,
      history: extra.history ?? [],
      totalSamples: extra.totalSamples ?? 0,
    },
  };
}

function handleHttp(coord: Coordinator, req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.url === '/healthz') res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  else if (req.url === '/api/status')
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(coord.status()));
  else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
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
  const checkpoints = new CheckpointStore(path.join(cfg.runDir, 'checkpoints'), {
    keep: cfg.checkpointKeep,
    log: cfg.log,
  });
  const resumed = cfg.resume ? await loadResume(checkpoints, cfg.log) : undefined;
  const train = resumed?.train ?? cfg.train;
  const { data, dataInfo } = await loadRunData(train, cfg);
  const model = await prepareRunModel(train, data, cfg.runDir);
  const coord = new Coordinator({
    model,
    train,
    opts: cfg,
    data,
    dataInfo,
    runDir: cfg.runDir,
    summaryJson: cfg.summaryJson,
    checkpoints,
    resume: resumed?.resume,
    log: cfg.log,
    progress: cfg.progress,
    observers: cfg.observers ?? [],
  });
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => handleHttp(coord, req, res);
  const server = cfg.tls
    ? https.createServer({ cert: fs.readFileSync(cfg.tls.cert), key: fs.readFileSync(cfg.tls.key) }, onRequest)
    : http.createServer(onRequest);
  const admission = new Admission({
    token: cfg.token,
    context: 'control',
    authTimeoutMs: cfg.authTimeoutMs,
    maxPending: cfg.maxPendingAuth,
    maxHandshakeBytes: ADMISSION_DEFAULTS.maxHandshakeBytes,
    maxPayloadBytes: cfg.maxPayloadBytes,
    log: cfg.log,
  });
  const wss = admission.listen(server, (link, hello) => coord.admit(link, hello));
  const port = await listen(server, cfg.host, cfg.port);
  coord.begin();
  cfg.log.info(
    { host: cfg.host, port, runId: coord.runId, minWorkers: cfg.minWorkers, tls: !!cfg.tls },
    'coordinator listening',
  );
  let closed = false;
  const shutdown = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    // The stop messages are queued before the close frames, so closing right away still delivers them.
    for (const ws of wss.clients) ws.close(CLOSE_CODES.goingAway, 'coordinator shutting down');
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
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
