/**
 * Starting a coordinator: the whole product behind one handle. It loads the dataset (or the checkpoint to resume),
 * sets up the run's outputs as observers of the event stream (log, terminal, metrics.jsonl, summary, dashboard,
 * timeline), opens the control port (HTTP or HTTPS, with WebSocket upgrade), admits workers through the token
 * handshake and hands each to the Coordinator as a ControlLink. `close()` ends the run and every part of it.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { WebSocketServer } from 'ws';
import { Admission, ADMISSION_DEFAULTS } from '../shared/admission.js';
import { validateTrainConfig, type TrainConfig } from '../shared/config.js';
import { WebSocketControlLink } from '../shared/control-link.js';
import { limitDataset, type Dataset } from '../shared/data/dataset.js';
import { describeDataset } from '../shared/data/info.js';
import { loadDataset, type DataOptions } from '../shared/data/load.js';
import type { DatasetInfo } from '../shared/wire/protocol.js';
import { CLOSE_CODES, ConfigError, RunFinishedError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { ProgressView } from '../shared/cli/progress.js';
import { prepareRunModel } from '../shared/train/run-model.js';
import { CheckpointStore } from './checkpoints.js';
import { Coordinator } from './coordinator.js';
import type { ClusterSummary, CoordinatorOptions, ResumeState } from './run-types.js';
import type { EpochOutcome } from './run-state.js';
import type { RunObserver } from './events.js';
import { startObservability, type Observability } from './observability.js';
import { logObserver, metricsFileObserver, progressObserver, summaryFileObserver } from './outputs.js';

export type { ClusterSummary } from './run-types.js';

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
  /** Continue from the newest valid checkpoint in runDir/checkpoints (of the run recorded in runDir/run.json). */
  resume: boolean;
  /** With resume: the run whose checkpoints to accept, overriding runDir/run.json (another run's, deliberately). */
  resumeRun?: string;
  checkpointKeep: number;
  maxPayloadBytes: number;
  authTimeoutMs: number;
  maxPendingAuth: number;
  tls?: { cert: string; key: string };
  log: Logger;
  progress: ProgressView;
  /** The dashboard (page, /api/status, /metrics); absent: none. */
  dashboard?: { host: string; port: number };
  /** Write a Chrome trace of every step here. */
  timeline?: string;
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
  lingerMs: 15_000,
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
  /** The dashboard's address, when it runs. */
  dashboardUrl?: string;
  /** Resolves when the run ends (finished, failed or closed). */
  done: Promise<ClusterSummary>;
  /** Resolves once the coordinator has shut down after the end (every worker told, or --linger-ms passed). */
  shutDown: Promise<void>;
  /** End the run now if it still goes on, cut the linger short and shut down. */
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

const RUN_FILE = 'run.json';

interface RunRecord {
  runId?: unknown;
  createdAt?: unknown;
  /** When the run finished (its outcome was `finished`): a --resume of it has nothing to continue. */
  finishedAt?: unknown;
}

function readRunRecord(runDir: string): RunRecord {
  try {
    return JSON.parse(fs.readFileSync(path.join(runDir, RUN_FILE), 'utf8')) as RunRecord;
  } catch {
    return {};
  }
}

/** The run a run folder belongs to, from its run.json (absent in folders of older versions). */
function runIdOf(record: RunRecord): string | undefined {
  return typeof record.runId === 'string' ? record.runId : undefined;
}

function recordRunId(runDir: string, runId: string): void {
  fs.mkdirSync(runDir, { recursive: true });
  fs.writeFileSync(path.join(runDir, RUN_FILE), `${JSON.stringify({ runId, createdAt: new Date().toISOString() })}\n`);
}

/**
 * Marks the run finished in run.json as soon as it ends (before anything else observes the end), so that a
 * coordinator restarted with --resume afterwards does not wait for workers that have left.
 */
function finishedMarker(runDir: string, log: Logger): RunObserver {
  return (event) => {
    if (event.kind !== 'runEnded' || event.summary.outcome !== 'finished') return;
    try {
      const record = { ...readRunRecord(runDir), finishedAt: new Date().toISOString() };
      fs.writeFileSync(path.join(runDir, RUN_FILE), `${JSON.stringify(record)}\n`);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not mark the run finished in run.json');
    }
  };
}

/** --resume of a folder whose run finished: RunFinishedError (unless another run's checkpoints are asked for). */
function refuseFinishedRun(record: RunRecord, resumeRun: string | undefined): void {
  const sameRun = resumeRun === undefined || resumeRun === record.runId;
  if (sameRun && typeof record.runId === 'string' && typeof record.finishedAt === 'string')
    throw new RunFinishedError(record.runId, record.finishedAt);
}

/** The newest valid checkpoint of this folder's run, its training config, and where to continue. */
async function loadResume(
  store: CheckpointStore,
  runId: string | undefined,
  log: Logger,
): Promise<{ resume: ResumeState; train: TrainConfig }> {
  const { checkpoint, skipped } = await store.loadLatest(runId);
  for (const s of skipped)
    if (s.error.code === 'CHECKPOINT_CORRUPT')
      log.error({ file: s.file, problem: s.error.message, code: s.error.code }, 'skipped a corrupt checkpoint');
  if (!checkpoint) {
    const others = skipped.filter((s) => s.error.code === 'CHECKPOINT_OTHER_RUN').map((s) => s.file);
    const hint = others.length > 0 ? `; ${others.length} belong to other runs (--resume-run <id> accepts one)` : '';
    throw new ConfigError(`--resume: no valid checkpoint of run ${runId ?? '(any)'} in ${store.dir}${hint}`);
  }
  const m = checkpoint.meta;
  const extra = (m.extra ?? {}) as { history?: EpochOutcome[]; totalSamples?: number; lineage?: unknown };
  return {
    train: validateTrainConfig(m.config as Partial<TrainConfig>),
    resume: {
      runId: m.runId,
      file: checkpoint.file,
      position: { epoch: m.epoch, consumed: m.consumed, step: m.step },
      weights: checkpoint.weights,
      optimizer: checkpoint.optimizer,
      lineage: typeof extra.lineage === 'string' ? extra.lineage : '',
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

/** Every output of the run, observing its events; the caller's own observers come last. */
async function startOutputs(
  cfg: CoordinatorConfig,
): Promise<{ observers: RunObserver[]; close(): Promise<void>; url?: string }> {
  const metrics = metricsFileObserver(path.join(cfg.runDir, 'metrics.jsonl'), cfg.log);
  let observability: Observability | undefined;
  if (cfg.dashboard || cfg.timeline) {
    observability = await startObservability({
      runDir: cfg.runDir,
      dashboardHost: cfg.dashboard?.host ?? '127.0.0.1',
      dashboardPort: cfg.dashboard?.port ?? 0,
      ...(cfg.timeline ? { timeline: cfg.timeline } : {}),
      log: cfg.log,
    });
  }
  return {
    observers: [
      logObserver(cfg.log),
      progressObserver(cfg.progress),
      metrics.observe,
      ...(cfg.summaryJson ? [summaryFileObserver(cfg.summaryJson, cfg.log)] : []),
      ...(observability?.observers ?? []),
      ...(cfg.observers ?? []),
    ],
    ...(observability ? { url: observability.dashboard.url } : {}),
    async close() {
      await metrics.close();
      await observability?.close();
    },
  };
}

function serve(cfg: CoordinatorConfig, coord: Coordinator): { server: http.Server; wss: WebSocketServer } {
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
  const wss = admission.listen(server, (link, hello) => coord.admit(new WebSocketControlLink(link, cfg.log), hello));
  return { server, wss };
}

async function closeServer(server: http.Server, wss: WebSocketServer): Promise<void> {
  // The stop messages are queued before the close frames, so closing right away still delivers them.
  for (const ws of wss.clients) ws.close(CLOSE_CODES.goingAway, 'coordinator shutting down');
  await new Promise<void>((resolve) => wss.close(() => resolve()));
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Start a coordinator; resolves once it listens. */
export async function startCoordinator(cfg: CoordinatorConfig): Promise<CoordinatorHandle> {
  const checkpoints = new CheckpointStore(path.join(cfg.runDir, 'checkpoints'), {
    keep: cfg.checkpointKeep,
    log: cfg.log,
  });
  const recorded = readRunRecord(cfg.runDir);
  if (cfg.resume) refuseFinishedRun(recorded, cfg.resumeRun);
  const expectedRun = cfg.resumeRun ?? runIdOf(recorded);
  const resumed = cfg.resume ? await loadResume(checkpoints, expectedRun, cfg.log) : undefined;
  const runId = resumed?.resume.runId ?? randomUUID();
  const train = resumed?.train ?? cfg.train;
  const { data, dataInfo } = await loadRunData(train, cfg);
  const model = await prepareRunModel(train, data, cfg.runDir);
  recordRunId(cfg.runDir, runId);
  const outputs = await startOutputs(cfg);
  const coord = new Coordinator({
    runId,
    model,
    train,
    opts: cfg,
    data,
    dataInfo,
    checkpoints,
    ...(resumed ? { resume: resumed.resume } : {}),
    log: cfg.log,
    observers: [finishedMarker(cfg.runDir, cfg.log), ...outputs.observers],
  });
  const { server, wss } = serve(cfg, coord);
  const port = await listen(server, cfg.host, cfg.port);
  coord.begin();
  cfg.log.info({ host: cfg.host, port, runId, minWorkers: cfg.minWorkers, tls: !!cfg.tls }, 'coordinator listening');
  let closing: Promise<void> | undefined;
  const shutdown = (): Promise<void> => (closing ??= closeServer(server, wss).then(() => outputs.close()));
  const shutDown = coord.done.then(() => coord.lingerAfterEnd()).then(() => shutdown());
  return {
    port,
    runId,
    ...(outputs.url ? { dashboardUrl: outputs.url } : {}),
    done: coord.done,
    shutDown,
    async close(reason = 'closed') {
      coord.finish('interrupted', reason);
      await coord.lingerAfterEnd(true);
      await shutdown();
      return coord.done;
    },
  };
}
