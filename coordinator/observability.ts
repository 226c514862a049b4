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
import { createTimelineWriter } from './timeline.js';

export interface ObservabilityOptions {
  dashboardHost: string;
  /** 0 = any free port; the default port falls back to a free one when taken. */
  dashboardPort: number;
  timeline?: string;
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
): Promise<DashboardHandle> {
  const start = (port: number) => startDashboard({ host: opts.dashboardHost, port, state, metrics, log: opts.log });
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
  const timeline = opts.timeline ? createTimelineWriter(opts.timeline) : undefined;
  const dashboard = await startDashboardWithFallback(opts, state, metrics);
  return {
    observers: [state.observe, metrics.observe, ...(timeline ? [timeline.observe] : [])],
    dashboard,
    async close() {
      await timeline?.close();
      await dashboard.close();
    },
  };
}
