/**
 * The coordinator's observers, set up from its options: the dashboard (page, /api/status, /metrics, /healthz, live
 * updates) and the optional Chrome-trace timeline. Started before the coordinator, so they see the run from its
 * first event.
 */
import { RingtrainError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { createMetrics } from './dashboard/metrics.js';
import { DASHBOARD_DEFAULTS, startDashboard, type DashboardHandle } from './dashboard/server.js';
import { DashboardState } from './dashboard/state.js';
import type { RunObserver } from './events.js';
import { reportOnRunEnd } from './dashboard/report.js';
import { createEventRecorder, runModelSource } from './dashboard/run-files.js';
import { createTimelineWriter, TimelineBuffer } from './timeline.js';

export interface ObservabilityOptions {
  dashboardHost: string;
  /** 0 = any free port; the default port falls back to a free one when taken. */
  dashboardPort: number;
  timeline?: string;
  /** The run folder: events.jsonl (the dashboard of the run after it ended), report.html, the saved model. */
  runDir?: string;
  log: Logger;
}

export interface Observability {
  observers: RunObserver[];
  dashboard: DashboardHandle;
  close(): Promise<void>;
}

async function startDashboardWithFallback(
  opts: ObservabilityOptions,
  state: DashboardState,
  metrics: ReturnType<typeof createMetrics>,
  timeline: TimelineBuffer,
): Promise<DashboardHandle> {
  const start = (port: number) =>
    startDashboard({
      host: opts.dashboardHost,
      port,
      state,
      metrics,
      log: opts.log,
      timeline: () => timeline.json(),
      ...(opts.runDir ? { model: runModelSource(opts.runDir) } : {}),
    });
  try {
    return await start(opts.dashboardPort);
  } catch (err) {
    const inUse =
      (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ||
      ((err as RingtrainError).cause as NodeJS.ErrnoException)?.code === 'EADDRINUSE';
    if (!inUse || opts.dashboardPort !== DASHBOARD_DEFAULTS.port) throw err;
    opts.log.warn({ port: opts.dashboardPort }, 'dashboard port in use; using a free port');
    return start(0);
  }
}

export async function startObservability(opts: ObservabilityOptions): Promise<Observability> {
  const state = new DashboardState();
  const metrics = createMetrics({});
  // One bounded timeline: the dashboard's download, and the --timeline file when asked for.
  const buffer = new TimelineBuffer();
  const timeline = opts.timeline ? createTimelineWriter(opts.timeline, { buffer }) : undefined;
  const recorder = opts.runDir ? createEventRecorder(opts.runDir) : undefined;
  const dashboard = await startDashboardWithFallback(opts, state, metrics, buffer);
  const onReportError = (err: unknown): void => opts.log.warn({ err }, 'the run report could not be written');
  return {
    observers: [
      state.observe,
      metrics.observe,
      timeline ? timeline.observe : buffer.observe,
      ...(recorder ? [recorder.observe] : []),
      ...(opts.runDir ? [reportOnRunEnd(opts.runDir, state, onReportError)] : []),
    ],
    dashboard,
    async close() {
      await timeline?.close();
      await recorder?.close();
      await dashboard.close();
    },
  };
}
