/**
 * The coordinator's dashboard over HTTP, read-only:
 *
 *   /                 the page (coordinator/dashboard/page/, plain browser JS, no build step)
 *   /app.js /app.css  its script and style
 *   /vendor/uplot.js  the uPlot chart library, served from node_modules (no CDN)
 *   /vendor/uplot.css
 *   /vendor/tf.min.js TensorFlow.js's browser bundle, from node_modules (the "try the model" panel)
 *   /api/status       DashboardState.snapshot() as JSON
 *   /api/runs         the runs this dashboard shows (several with `ringtrain dashboard --run-dir A --run-dir B`), each
 *                     with its status and series, for the side-by-side view
 *   /api/files        what the run offers: {"timeline": bool, "model": bool}
 *   /timeline.json    the run's timeline (Chrome trace format, bounded), as a download, when the run has one
 *   /model/model.json the run's latest saved model (TensorFlow.js layers format) and its weight files, when it has one
 *   /events           server-sent events: `snapshot` (everything) on connect, then `update` (status, new series
 *                     points, new log entries) at most every `updateIntervalMs`; the browser's EventSource
 *                     reconnects by itself (after a coordinator restart too) and gets a fresh snapshot
 *   /metrics          Prometheus text format
 *   /healthz          `ok`
 *
 * Every per-run route takes `?run=NAME` (default: the first run). Only GET and HEAD (405 otherwise), 404 for anything else; a failing request is answered or dropped, never fatal.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { ConfigError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { bracketHost } from '../../shared/net.js';
import { guardServer } from '../../shared/ws-util.js';
import type { DashboardCursor, DashboardState } from './state.js';

/** A trained model the page can load: model.json and the weight files it names. */
interface ModelSource {
  /** The file's bytes, or undefined when the model has no such file (404). */
  file(name: string): Promise<Buffer | undefined>;
}

/** One run the dashboard shows. */
export interface DashboardRun {
  /** Its name in `?run=` and in the list of runs (the run folder's name). */
  name: string;
  state: DashboardState;
  /** The run's timeline, as Chrome trace JSON. */
  timeline?: () => string;
  model?: ModelSource;
}

export interface DashboardOptions {
  /** Address to listen on (the CLI's --dashboard-host, default 127.0.0.1). */
  host: string;
  /** Port to listen on; 0 picks a free one (the CLI's --dashboard-port, default 8080). */
  port: number;
  /** The run a coordinator serves; or give `runs`. */
  state?: DashboardState;
  /** The runs to show, the first by default (`state` is a shorthand for one run named 'run'). */
  runs?: DashboardRun[];
  timeline?: () => string;
  model?: ModelSource;
  metrics: { registry: Registry };
  log: Logger;
  /** At most one live update per this many ms to each page (default 250). */
  updateIntervalMs?: number;
  /** Live pages served at once; more get 503 (default 64). */
  maxClients?: number;
  /** A comment line to every live page this often, so idle proxies and dead peers are noticed (default 15000). */
  keepAliveMs?: number;
}

export interface DashboardHandle {
  port: number;
  /** The page's address, e.g. http://127.0.0.1:8080/ */
  url: string;
  /** Ends live connections and stops listening. */
  close(): Promise<void>;
}

export const DASHBOARD_DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  updateIntervalMs: 250,
  maxClients: 64,
  keepAliveMs: 15_000,
};

/** A page that stops reading gets dropped once this much is queued for it. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;
const RECONNECT_MS = 2000;

interface Asset {
  body: Buffer;
  type: string;
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};
const PAGE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** The page folder: next to this file when run from source, or in the source tree when run from dist/. */
export function pageDir(): string {
  const candidates = [
    new URL('./page/', import.meta.url),
    new URL('../../../coordinator/dashboard/page/', import.meta.url),
  ];
  for (const c of candidates) {
    const dir = fileURLToPath(c);
    if (fs.existsSync(`${dir}index.html`)) return dir;
  }
  throw new ConfigError(
    `dashboard page files not found (looked in ${candidates.map((c) => fileURLToPath(c)).join(', ')})`,
  );
}

/** Read every static file once at start, so a missing file fails the start rather than a page load. */
function loadAssets(): Map<string, Asset> {
  const dir = pageDir();
  const require = createRequire(import.meta.url);
  const files: [string, string, string][] = [
    ['/', `${dir}index.html`, 'text/html; charset=utf-8'],
    ['/app.js', `${dir}app.js`, 'text/javascript; charset=utf-8'],
    ['/app.css', `${dir}app.css`, 'text/css; charset=utf-8'],
    ['/vendor/uplot.js', require.resolve('uplot/dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/vendor/uplot.css', require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8'],
    ['/vendor/tf.min.js', require.resolve('@tensorflow/tfjs/dist/tf.es2017.min.js'), 'text/javascript; charset=utf-8'],
    ['/runs.js', `${dir}runs.js`, 'text/javascript; charset=utf-8'],
    ['/try-model.js', `${dir}try-model.js`, 'text/javascript; charset=utf-8'],
  ];
  return new Map(files.map(([route, file, type]) => [route, { body: fs.readFileSync(file), type }]));
}

function displayUrl(host: string, port: number): string {
  const shown = host === '0.0.0.0' || host === '::' ? os.hostname() : host;
  return `http://${bracketHost(shown)}:${port}/`;
}

function send(
  res: http.ServerResponse,
  status: number,
  type: string,
  body: string | Buffer,
  extra: http.OutgoingHttpHeaders = {},
): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

interface LiveClient {
  res: http.ServerResponse;
  cursor: DashboardCursor;
}

/** The /events stream: one snapshot per page on connect, then throttled incremental updates to all of them. */
class LiveUpdates {
  private readonly clients = new Set<LiveClient>();
  private timer?: NodeJS.Timeout;
  private lastFlush = 0;
  private readonly keepAlive: NodeJS.Timeout;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly state: DashboardState,
    private readonly opts: Required<Pick<DashboardOptions, 'updateIntervalMs' | 'maxClients' | 'keepAliveMs'>>,
    private readonly log: Logger,
  ) {
    this.unsubscribe = state.subscribe(() => this.schedule());
    this.keepAlive = setInterval(() => this.broadcastComment('keep-alive'), opts.keepAliveMs);
    this.keepAlive.unref();
  }

  open(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.clients.size >= this.opts.maxClients) {
      send(res, 503, 'text/plain; charset=utf-8', 'too many live dashboard pages\n', { 'retry-after': '10' });
      return;
    }
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    if (req.method === 'HEAD') return void res.end();
    req.socket.setNoDelay(true);
    const client: LiveClient = { res, cursor: this.state.cursor() };
    const snapshot = this.state.snapshot();
    this.clients.add(client);
    res.on('close', () => this.clients.delete(client));
    res.on('error', (err) => {
      this.log.debug({ err }, 'dashboard page connection failed');
      this.drop(client);
    });
    this.write(client, `retry: ${RECONNECT_MS}\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
  }

  private schedule(): void {
    if (this.timer || this.clients.size === 0) return;
    const wait = Math.max(0, this.lastFlush + this.opts.updateIntervalMs - Date.now());
    this.timer = setTimeout(() => this.flush(), wait);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = undefined;
    this.lastFlush = Date.now();
    for (const client of this.clients) {
      const { cursor, ...update } = this.state.changesSince(client.cursor);
      client.cursor = cursor;
      this.write(client, `event: update\ndata: ${JSON.stringify(update)}\n\n`);
    }
  }

  private broadcastComment(text: string): void {
    for (const client of this.clients) this.write(client, `: ${text}\n\n`);
  }

  private write(client: LiveClient, text: string): void {
    if (client.res.writableLength > MAX_QUEUED_BYTES) {
      this.log.warn({ queued: client.res.writableLength }, 'dashboard page is not reading its updates; dropping it');
      return this.drop(client);
    }
    client.res.write(text);
  }

  private drop(client: LiveClient): void {
    this.clients.delete(client);
    client.res.destroy();
  }

  get size(): number {
    return this.clients.size;
  }

  close(): void {
    this.unsubscribe();
    clearTimeout(this.timer);
    clearInterval(this.keepAlive);
    for (const client of this.clients) client.res.end();
    this.clients.clear();
  }
}

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const NO_STORE = { 'cache-control': 'no-store' };
/** Weight file names a model.json may point at: plain names in its own folder, nothing else. */
const MODEL_FILE = /^[A-Za-z0-9._-]{1,128}$/;

/** The runs and their live streams; a run's stream is made when its first page connects. */
class Runs {
  readonly list: DashboardRun[];
  private readonly live = new Map<string, LiveUpdates>();

  constructor(
    opts: DashboardOptions,
    private readonly makeLive: (state: DashboardState) => LiveUpdates,
  ) {
    this.list = opts.runs ?? [];
    if (opts.state) {
      this.list.unshift({
        name: 'run',
        state: opts.state,
        ...(opts.timeline ? { timeline: opts.timeline } : {}),
        ...(opts.model ? { model: opts.model } : {}),
      });
    }
    if (this.list.length === 0) throw new ConfigError('the dashboard needs a run to show');
  }

  find(url: URL): DashboardRun | undefined {
    const name = url.searchParams.get('run');
    return name === null ? this.list[0] : this.list.find((r) => r.name === name);
  }

  liveOf(run: DashboardRun): LiveUpdates {
    let live = this.live.get(run.name);
    if (!live) {
      live = this.makeLive(run.state);
      this.live.set(run.name, live);
    }
    return live;
  }

  /** The side-by-side view: each run's status and series, without its event log. */
  overview(): string {
    return JSON.stringify({
      runs: this.list.map((r) => {
        const { events: _events, ...snapshot } = r.state.snapshot();
        return { name: r.name, hasTimeline: !!r.timeline, hasModel: !!r.model, ...snapshot };
      }),
    });
  }

  get clients(): number {
    let n = 0;
    for (const l of this.live.values()) n += l.size;
    return n;
  }

  close(): void {
    for (const l of this.live.values()) l.close();
  }
}

/** What the page may offer for a run: the timeline download, the model panel. */
async function runFiles(res: http.ServerResponse, run: DashboardRun): Promise<void> {
  const model = run.model ? (await run.model.file('model.json')) !== undefined : false;
  send(res, 200, JSON_TYPE, JSON.stringify({ timeline: !!run.timeline, model }), NO_STORE);
}

async function sendModelFile(res: http.ServerResponse, run: DashboardRun, name: string): Promise<void> {
  const body = MODEL_FILE.test(name) && run.model ? await run.model.file(name) : undefined;
  if (!body) return send(res, 404, TEXT, 'no such model file\n');
  const type = name.endsWith('.json') ? JSON_TYPE : 'application/octet-stream';
  send(res, 200, type, body, NO_STORE);
}

function runRoute(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  runs: Runs,
  opts: DashboardOptions,
): void | Promise<void> {
  if (url.pathname === '/healthz') return send(res, 200, TEXT, 'ok\n', NO_STORE);
  if (url.pathname === '/metrics') {
    return opts.metrics.registry
      .metrics()
      .then((text) => send(res, 200, opts.metrics.registry.contentType, text, NO_STORE));
  }
  if (url.pathname === '/api/runs') return send(res, 200, JSON_TYPE, runs.overview(), NO_STORE);
  const run = runs.find(url);
  if (!run) return send(res, 404, TEXT, 'no such run\n');
  switch (url.pathname) {
    case '/api/status':
      return send(res, 200, JSON_TYPE, JSON.stringify(run.state.snapshot()), NO_STORE);
    case '/api/files':
      return runFiles(res, run);
    case '/events':
      return runs.liveOf(run).open(req, res);
    case '/timeline.json':
      if (!run.timeline) return send(res, 404, TEXT, 'this run has no timeline\n');
      return send(res, 200, JSON_TYPE, run.timeline(), {
        ...NO_STORE,
        'content-disposition': `attachment; filename="${run.name.replace(/[^A-Za-z0-9._-]/g, '_')}-timeline.json"`,
      });
  }
  if (url.pathname.startsWith('/model/')) return sendModelFile(res, run, url.pathname.slice('/model/'.length));
  return send(res, 404, TEXT, 'not found\n');
}

function route(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  opts: DashboardOptions,
  assets: Map<string, Asset>,
  runs: Runs,
): void | Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return send(res, 405, TEXT, 'method not allowed: the dashboard is read-only\n', { allow: 'GET, HEAD' });
  }
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://dashboard');
  } catch {
    return send(res, 400, TEXT, 'bad request\n');
  }
  const asset = assets.get(url.pathname === '/index.html' ? '/' : url.pathname);
  if (asset) {
    const csp = asset.type.startsWith('text/html') ? { 'content-security-policy': PAGE_CSP } : {};
    return send(res, 200, asset.type, asset.body, { 'cache-control': 'no-cache', ...csp });
  }
  return runRoute(req, res, url, runs, opts);
}

function listen(server: http.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(new ConfigError(`the dashboard cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** Serve the dashboard; resolves once it listens. */
export async function startDashboard(opts: DashboardOptions): Promise<DashboardHandle> {
  const assets = loadAssets();
  const log = opts.log;
  const liveOpts = {
    updateIntervalMs: opts.updateIntervalMs ?? DASHBOARD_DEFAULTS.updateIntervalMs,
    maxClients: opts.maxClients ?? DASHBOARD_DEFAULTS.maxClients,
    keepAliveMs: opts.keepAliveMs ?? DASHBOARD_DEFAULTS.keepAliveMs,
  };
  const runs = new Runs(opts, (state) => new LiveUpdates(state, liveOpts, log));
  const live = runs;
  const server = http.createServer((req, res) => {
    const fail = (err: unknown): void => {
      log.warn({ err, url: req.url }, 'dashboard request failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    };
    try {
      void Promise.resolve(route(req, res, opts, assets, runs)).catch(fail);
    } catch (err) {
      fail(err);
    }
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
    log.debug({ err }, 'malformed dashboard request');
  });
  guardServer(server, log);
  const port = await listen(server, opts.host, opts.port).catch((err: unknown) => {
    live.close();
    throw err;
  });
  const url = displayUrl(opts.host, port);
  log.info({ host: opts.host, port, url }, 'dashboard listening');
  let closing: Promise<void> | undefined;
  return {
    port,
    url,
    close() {
      closing ??= new Promise<void>((resolve) => {
        live.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
